"""Wrong user code around locks: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

lock = rp.Lock("invoice:7", ttl=10)
lock.acquire(timeout="soon")  # E: No overload variant of "acquire"
held: rp.AsyncLockHandle = lock.acquire()  # E: Incompatible types in assignment
_ = rp.Held  # E: has no attribute "Held"
