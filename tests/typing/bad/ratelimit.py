"""Wrong user code around rate limiters: each marked line must be a mypy error."""

from __future__ import annotations

from redispatterns.ratelimit import (
    AsyncSlidingWindowLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    rate_limited,
)

limiter = SlidingWindowLimiter("10/minute")
SlidingWindowLimiter("10/minute", 60)  # E: No overload variant of "SlidingWindowLimiter"
SlidingWindowLimiter(10)  # E: No overload variant of "SlidingWindowLimiter"
TokenBucketLimiter("100/second", per=2.0)  # E: No overload variant of "TokenBucketLimiter"
SlidingWindowLimiter(10, 60, on_error="ignore")  # E: No overload variant of "SlidingWindowLimiter"
allowed: bool = limiter.hit("user:1")  # E: Incompatible types in assignment


@rate_limited(limiter)
def report(user_id: int) -> str:
    return str(user_id)


report("seven")  # E: Argument 1 to "__call__" of "RateLimitedFunction" has incompatible type "str"
size: int = report(7)  # E: Incompatible types in assignment
report.limiter.hit(7)  # E: Argument 1 to "hit" of "MultiLimiter" has incompatible type "int"


@rate_limited(AsyncSlidingWindowLimiter("10/minute"))  # E: Argument 1 has incompatible type
def not_async() -> int:
    return 1
