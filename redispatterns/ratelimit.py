"""Rate limiters: exact sliding log, token bucket (GCRA), clock-aligned fixed window, approximate
sliding counter, and several policies at once — one EVALSHA per check, server time, sync and
asyncio twins and a decorator (the WSGI/ASGI middlewares are in ``redispatterns.http``).

>>> limiter = rp.SlidingWindowLimiter("100/minute")   # or SlidingWindowLimiter(100, 60)
>>> d = limiter.hit("user:42")          # Decision(allowed, remaining, retry_after, reset_after, limit)
>>> if not d: return 429, d.headers()

See ``redispatterns._core.ratelimit`` for the algorithms and their exact semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, overload

from ._core.ratelimit import Decision, Policy, PolicyState, parse_rate
from ._limiters import AsyncMultiLimiter, LimiterBase, LimiterOptions, MultiLimiter
from ._rate_limited import AsyncRateLimitedFunction, RateLimitedFunction, rate_limited

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AsyncFixedWindowLimiter",
    "AsyncMultiLimiter",
    "AsyncRateLimitedFunction",
    "AsyncSlidingCounterLimiter",
    "AsyncSlidingWindowLimiter",
    "AsyncTokenBucketLimiter",
    "Decision",
    "FixedWindowLimiter",
    "MultiLimiter",
    "Policy",
    "PolicyState",
    "RateLimitedFunction",
    "SlidingCounterLimiter",
    "SlidingWindowLimiter",
    "TokenBucketLimiter",
    "rate_limited",
]


def _window_policy(
    build: Callable[[int, float], Policy], what: str, limit: int | str, window: float | None
) -> Policy:
    """``(limit, window)`` or one rate string (``"10/minute"``, window left out)."""
    if isinstance(limit, str):
        if window is not None:
            raise TypeError(f"{what}: give a rate string ({limit!r}) or a limit and a window, not both")
        limit, window = parse_rate(limit, what)
    elif window is None:
        raise TypeError(f"{what} needs a window in seconds, or a rate string such as '10/minute'")
    return build(limit, window)


class _Window(LimiterBase):
    """A limiter of one window policy: ``(limit, window)`` or one rate string; ``_policy``
    names the ``Policy`` constructor (``sliding``, ``fixed``, ``sliding_counter``)."""

    _policy: ClassVar[str]

    @overload
    def __init__(self, limit: str, /, **options: Unpack[LimiterOptions]) -> None: ...
    @overload
    def __init__(self, limit: int, window: float, **options: Unpack[LimiterOptions]) -> None: ...
    def __init__(self, limit: int | str, window: float | None = None, **options: Any) -> None:
        pol = _window_policy(getattr(Policy, self._policy), type(self).__name__, limit, window)
        LimiterBase.__init__(self, [pol], **options)


class _Sliding(_Window):
    _policy = "sliding"


class _Fixed(_Window):
    _policy = "fixed"


class _Counter(_Window):
    _policy = "sliding_counter"


class _Bucket(LimiterBase):
    @overload
    def __init__(
        self, rate: str, /, capacity: int | None = None, **options: Unpack[LimiterOptions]
    ) -> None: ...
    @overload
    def __init__(
        self, rate: float, capacity: int | None = None, *, per: float = 1.0, **options: Unpack[LimiterOptions]
    ) -> None: ...
    def __init__(
        self, rate: float | str, capacity: int | None = None, *, per: float | None = None, **options: Any
    ) -> None:
        if isinstance(rate, str):
            if per is not None:
                raise TypeError(
                    f"{type(self).__name__}: give a rate string ({rate!r}) or rate and per=, not both"
                )
            count, window = parse_rate(rate, type(self).__name__)
            rate, per = float(count), window
        pol = Policy.token_bucket(rate, capacity, per=1.0 if per is None else per)
        LimiterBase.__init__(self, [pol], **options)


class SlidingWindowLimiter(_Sliding, MultiLimiter):
    """Exact: never more than ``limit`` units in any trailing ``window`` seconds (a sorted-set log).

    ``SlidingWindowLimiter("10/minute")`` or ``SlidingWindowLimiter(10, 60)``. Memory grows with
    the limit (~40 B per admitted unit up to 128 entries, ~120 B beyond); prefer
    :class:`TokenBucketLimiter` for large limits.
    """


class AsyncSlidingWindowLimiter(_Sliding, AsyncMultiLimiter):
    """The asyncio twin of :class:`SlidingWindowLimiter`."""


class TokenBucketLimiter(_Bucket, MultiLimiter):
    """A token bucket of ``capacity`` tokens refilled at ``rate`` per ``per`` seconds (GCRA, one integer).

    ``TokenBucketLimiter("100/second")`` or ``TokenBucketLimiter(100, capacity=20)``. A full
    bucket lets ``capacity`` (default: the rate, rounded up) through at once, so up to
    ``capacity + rate*window`` pass in a window; ``capacity=1`` paces evenly.
    """


class AsyncTokenBucketLimiter(_Bucket, AsyncMultiLimiter):
    """The asyncio twin of :class:`TokenBucketLimiter`."""


class FixedWindowLimiter(_Fixed, MultiLimiter):
    """``limit`` units per clock-aligned window (quotas: per minute on the minute, per day at 00:00 UTC).

    ``FixedWindowLimiter("1000/day")`` or ``FixedWindowLimiter(1000, 86400)``.
    """


class AsyncFixedWindowLimiter(_Fixed, AsyncMultiLimiter):
    """The asyncio twin of :class:`FixedWindowLimiter`."""


class SlidingCounterLimiter(_Counter, MultiLimiter):
    """About ``limit`` per trailing ``window``: two counters per subject (Cloudflare's estimate).

    ``SlidingCounterLimiter("100/minute")`` or ``SlidingCounterLimiter(100, 60)``. Constant memory
    whatever the limit; approximate: under adversarial timing up to ~2x the limit can pass in a
    trailing window, and early traffic in the previous window can cause early denials.
    """


class AsyncSlidingCounterLimiter(_Counter, AsyncMultiLimiter):
    """The asyncio twin of :class:`SlidingCounterLimiter`."""
