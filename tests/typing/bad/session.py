"""Wrong user code around sessions and pub/sub: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

store = rp.SessionStore()
store.create(7.5)  # E: Argument 1 to "create" of "SessionStore" has incompatible type "float"
store.get(b"token")  # E: Argument 1 to "get" of "SessionStore" has incompatible type "bytes"
rp.SessionStore(on_error="open")  # E: Argument "on_error" to "SessionStore" has incompatible type
token: int = store.create("u")  # E: Incompatible types in assignment
rp.Subscriber(["orders"], overflow="drop")  # E: Argument "overflow" to "Subscriber" has incompatible type
