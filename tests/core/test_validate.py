"""Every duration at the public edge is refused with ValueError/TypeError when it is not a finite,
representable number of seconds: inf, NaN, 1e300, negative, bool (D11)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import redispatterns as rp
from redispatterns._core import validate
from redispatterns.testing import fake_client


def test_seconds_bounds() -> None:
    assert validate.seconds(1.5, "ttl") == 1.5
    assert validate.seconds(validate.MAX_SECONDS, "ttl") == validate.MAX_SECONDS
    for bad in (math.inf, -math.inf, math.nan, 1e300, validate.MAX_SECONDS * 1.001, -1, 0):
        with pytest.raises(ValueError, match="ttl"):
            validate.seconds(bad, "ttl")
    for wrong in (True, "5", None):
        with pytest.raises(TypeError, match="ttl must be a number of seconds"):
            validate.seconds(wrong, "ttl")


EDGES: dict[str, Callable[[Any, Any], Any]] = {
    "cached": lambda c, v: rp.cached(ttl=v, client=c)(lambda x: x),
    "Lock": lambda c, v: rp.Lock("n", ttl=v, client=c),
    "SessionStore": lambda c, v: rp.SessionStore(c, ttl=v),
    "Mount": lambda c, v: rp.Mount(prefix="p:", ttl=v),
    "SlidingWindowLimiter": lambda c, v: rp.SlidingWindowLimiter(5, v, client=c),
}


@pytest.mark.parametrize("where", sorted(EDGES))
@pytest.mark.parametrize("bad", [math.inf, math.nan, 1e300, -1.0])
def test_no_public_duration_accepts_what_redis_cannot_hold(where: str, bad: float) -> None:
    with pytest.raises(ValueError):
        EDGES[where](fake_client(), bad)


def test_is_async_callable_sees_partials_and_async_call_methods() -> None:
    import functools

    async def coro(x: int) -> int:
        return x

    def plain(x: int) -> int:
        return x

    class AsyncCall:
        async def __call__(self) -> None: ...

    class SyncCall:
        def __call__(self) -> None: ...

        async def method(self) -> None: ...

    assert validate.is_async_callable(coro)
    assert validate.is_async_callable(functools.partial(coro, 1))
    assert validate.is_async_callable(functools.partial(functools.partial(coro), 1))
    assert validate.is_async_callable(AsyncCall())
    assert validate.is_async_callable(SyncCall().method)
    assert not validate.is_async_callable(SyncCall())
    assert not validate.is_async_callable(plain)
    assert not validate.is_async_callable(functools.partial(plain, 1))
    assert not validate.is_async_callable(AsyncCall)
    assert not validate.is_async_callable(42)
