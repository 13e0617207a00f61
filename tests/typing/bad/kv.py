"""Wrong user code around KV mounts and key-value stores: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

kv = rp.KV(None, {"user": rp.Mount(prefix="app:")}, write_policy="later")  # E: Argument "write_policy"
kv.set("user", "k", 1, ttl="soon")  # E: Argument "ttl"
size: str = kv.info("user", "k").size  # E: Item "None" of "KVInfo | None" has no attribute "size"
store = rp.KeyValueStore.open(name=7)  # E: Argument "name"
count: str = store.get_metadata().item_count  # E: Incompatible types in assignment
