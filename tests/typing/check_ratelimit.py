"""User code around rate limiters that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from typing_extensions import assert_type

import redispatterns as rp
from redispatterns.ratelimit import (
    AsyncSlidingWindowLimiter,
    AsyncTokenBucketLimiter,
    FixedWindowLimiter,
    MultiLimiter,
    SlidingCounterLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    rate_limited,
)

per_minute = SlidingWindowLimiter("10/minute")
per_window = SlidingWindowLimiter(10, 60, name="api", on_error="open")
bucket = TokenBucketLimiter("100/second", capacity=20)
paced = TokenBucketLimiter(5, 10, per=1.0)
quota = FixedWindowLimiter("1000/day")
approx = SlidingCounterLimiter("100 per 2 minutes")
several = MultiLimiter("5/second;1000/hour", algorithm="token_bucket")
policies = MultiLimiter([rp.Policy.sliding(10, 1), rp.Policy.token_bucket(1000, per=3600)])


def check(user: str) -> bool:
    d = per_minute.hit(user)
    assert_type(d, rp.Decision)
    assert_type(d.retry_after, float | None)
    assert_type(d.headers(), dict[str, str])
    assert_type(several.peek(user).violated, tuple[str, ...])
    return bool(d)


@rate_limited(per_minute, key=lambda user_id, **_: f"user:{user_id}")
def report(user_id: int, *, fmt: str = "pdf") -> bytes:
    return fmt.encode()


@rate_limited("5/second;1000/hour")
def export(rows: list[int]) -> int:
    return len(rows)


async_limiter = AsyncSlidingWindowLimiter("10/minute")


@rate_limited(async_limiter, key="jobs")
async def job(n: int) -> str:
    return str(n)


@rate_limited(AsyncTokenBucketLimiter("2/second"))
async def ping() -> None:
    return None


def calls() -> None:
    assert_type(report(7, fmt="csv"), bytes)
    assert_type(export([1, 2, 3]), int)
    assert_type(export.limiter, MultiLimiter)
    assert_type(job.limiter, rp.AsyncMultiLimiter)
    guarded: Callable[[list[int]], int] = export  # the signature is kept
    assert guarded([4]) == 1
    later: Callable[[int], Coroutine[Any, Any, str]] = job
    assert later is job


async def use() -> str:
    await ping()
    return await job(3)
