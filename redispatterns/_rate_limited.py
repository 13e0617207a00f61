"""``@rate_limited``: guard a ``def`` or ``async def`` with a limiter (or a rate string), keeping
its signature for type checkers. Re-exported by :mod:`redispatterns.ratelimit`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ._core import validate
from ._core.ratelimit import Policy, check_cost
from ._limiters import AsyncMultiLimiter, Limiter, MultiLimiter

__all__ = ["AsyncRateLimitedFunction", "RateLimitedFunction", "rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


def _subject(fn: Callable[..., Any], key: str | Callable[..., str] | None, args: Any, kwargs: Any) -> str:
    if key is None:
        return f"fn:{fn.__module__}.{fn.__qualname__}"
    if isinstance(key, str):
        return key
    subject = key(*args, **kwargs)
    if not isinstance(subject, str):
        raise TypeError(f"the key function of @rate_limited returned {type(subject).__name__}, not str")
    return subject


class RateLimitedFunction(Protocol[P, R_co]):
    """What ``@rate_limited`` makes of a ``def``: the same signature, and its ``limiter``."""

    limiter: MultiLimiter
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...


class AsyncRateLimitedFunction(Protocol[P, R_co]):
    """What ``@rate_limited`` makes of an ``async def``: the same signature, and its ``limiter``."""

    limiter: AsyncMultiLimiter
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...


class _EitherFlavour(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]  # a coroutine function is the async flavour
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncRateLimitedFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> RateLimitedFunction[P, R]: ...


@overload
def rate_limited(
    limiter: AsyncMultiLimiter, *, key: str | Callable[..., str] | None = None, cost: int = 1
) -> Callable[[Callable[P, Awaitable[R]]], AsyncRateLimitedFunction[P, R]]: ...
@overload
def rate_limited(
    limiter: MultiLimiter, *, key: str | Callable[..., str] | None = None, cost: int = 1
) -> Callable[[Callable[P, R]], RateLimitedFunction[P, R]]: ...
@overload
def rate_limited(
    limiter: str, *, key: str | Callable[..., str] | None = None, cost: int = 1
) -> _EitherFlavour: ...
def rate_limited(
    limiter: Limiter | str, *, key: str | Callable[..., str] | None = None, cost: int = 1
) -> Any:
    """Guard a ``def`` or ``async def``: each call hits ``limiter``; a denial raises ``RateLimited``.

    ``limiter`` is a limiter, or a rate string (``"10/minute"``, ``"5/second;1000/hour"``): then
    an exact sliding-log limiter of that function, on the default client, of the function's
    flavour. ``key`` is a fixed subject or a function of the call's arguments (default: one subject
    for the function). ``async def`` needs an asyncio limiter, ``def`` a sync one. The wrapper
    keeps the function's signature (for type checkers too) and has a ``limiter`` attribute.
    """
    if isinstance(limiter, str):
        Policy.parse(limiter)  # a bad rate fails here, at decoration
    elif not isinstance(limiter, (MultiLimiter, AsyncMultiLimiter)):
        raise TypeError("rate_limited needs a limiter or a rate, e.g. rp.SlidingWindowLimiter('100/minute')")
    check_cost(cost)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        is_async = validate.is_async_callable(fn)
        lim: Limiter
        if isinstance(limiter, str):
            name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
            lim = (AsyncMultiLimiter if is_async else MultiLimiter)(limiter, name=name)
        else:
            lim = limiter
        if is_async:
            if not isinstance(lim, AsyncMultiLimiter):
                raise TypeError(f"{fn.__qualname__} is async: give @rate_limited an Async*Limiter")
            alim = lim

            @functools.wraps(fn)
            async def aguarded(*args: Any, **kwargs: Any) -> Any:
                await alim.enforce(_subject(fn, key, args, kwargs), cost)
                return await fn(*args, **kwargs)

            aguarded.limiter = alim  # type: ignore[attr-defined]
            return aguarded
        if not isinstance(lim, MultiLimiter):
            raise TypeError(f"{fn.__qualname__} is sync: give @rate_limited a sync limiter")
        slim = lim

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            slim.enforce(_subject(fn, key, args, kwargs), cost)
            return fn(*args, **kwargs)

        guarded.limiter = slim  # type: ignore[attr-defined]
        return guarded

    return decorate
