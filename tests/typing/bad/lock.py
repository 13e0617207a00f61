"""Wrong user code around locks: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

lock = rp.Lock("invoice:7", ttl=10)
lock.acquire(timeout="soon")  # E: No overload variant of "acquire"
held: rp.AsyncLockHandle = lock.acquire()  # E: Incompatible types in assignment
_ = rp.Held  # E: has no attribute "Held"


@rp.locked("invoice:{invoice_id}")
def pay(invoice_id: int) -> str:
    return str(invoice_id)


@rp.locked("report:{day}")
async def build_report(day: str) -> int:
    return len(day)


pay("seven")  # E: Argument 1 to "pay" has incompatible type "str"
pay(7, 8)  # E: Too many arguments for "pay"
n: int = pay(7)  # E: Incompatible types in assignment
m: int = build_report("x")  # E: Incompatible types in assignment
