"""Rate limiters: exact sliding log, token bucket (GCRA), clock-aligned fixed window, approximate
sliding counter, and several policies at once — one EVALSHA per check, server time, sync and
asyncio twins and a decorator (the WSGI/ASGI middlewares are in ``redispatterns.http``).

>>> limiter = rp.SlidingWindowLimiter("100/minute")   # or SlidingWindowLimiter(100, 60)
>>> d = limiter.hit("user:42")          # Decision(allowed, remaining, retry_after, reset_after, limit)
>>> if not d: return 429, d.headers()

See ``redispatterns._core.ratelimit`` for the algorithms and their exact semantics.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypedDict, TypeVar, overload

from ._core import validate
from ._core.breaker import CircuitBreaker
from ._core.mount import Mount
from ._core.ops import Flow, Script
from ._core.ratelimit import (
    MODE_HIT,
    MODE_PEEK,
    MODE_PENALTY,
    Decision,
    OnError,
    Policy,
    PolicyState,
    check,
    check_cost,
    log,
    parse_rate,
    script_op,
)
from ._core.ratelimit import hit as _hit_flow
from ._core.ratelimit import reset as _reset_flow
from ._core.ratelimit import state_keys as _state_keys
from ._core.ratelimit import wait as _wait_flow
from ._core.ratelimit_policy import Algorithm
from ._runner import run_async, run_sync
from .errors import RateLimited
from .mount import Namespace, resolve

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AsyncFixedWindowLimiter",
    "AsyncMultiLimiter",
    "AsyncSlidingCounterLimiter",
    "AsyncSlidingWindowLimiter",
    "AsyncTokenBucketLimiter",
    "Decision",
    "FixedWindowLimiter",
    "MultiLimiter",
    "Policy",
    "PolicyState",
    "SlidingCounterLimiter",
    "SlidingWindowLimiter",
    "AsyncRateLimitedFunction",
    "RateLimitedFunction",
    "TokenBucketLimiter",
    "rate_limited",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
_ON_ERROR = ("raise", "open", "closed")


class LimiterOptions(TypedDict, total=False):
    """The keyword options every limiter takes (see :class:`MultiLimiter`)."""

    name: str
    mount: Mount | Namespace | None
    client: Any
    on_error: OnError
    on_decision: Callable[[Decision], Any] | None
    penalty: bool
    shadow: bool


class _Base:
    """Configuration shared by every limiter: policies, keys, error policy, hooks."""

    _ASYNC = False

    def __init__(
        self,
        policies: Sequence[Policy] | str,
        *,
        name: str = "",
        mount: Mount | Namespace | None = None,
        client: Any = None,
        on_error: OnError = "raise",
        on_decision: Callable[[Decision], Any] | None = None,
        penalty: bool = False,
        shadow: bool = False,
        algorithm: Algorithm = "sliding",
        _test_clock: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(policies, str):
            pols = Policy.parse(policies, algorithm=algorithm)
        elif algorithm != "sliding":
            raise ValueError("algorithm= applies to a rate string; Policy objects carry their own")
        else:
            pols = tuple(policies)
        if not pols:
            raise ValueError("a limiter needs at least one Policy")
        for p in pols:
            if not isinstance(p, Policy):
                raise TypeError(f"policies must be redispatterns.Policy objects, not {type(p).__name__}")
        if len({p.key_suffix for p in pols}) != len(pols):
            raise ValueError("two policies with the same algorithm, limit and window: drop the duplicate")
        if len({p.name for p in pols}) != len(pols):
            raise ValueError("policy names must differ (they name violated policies and HTTP fields)")
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(_ON_ERROR)}, got {on_error!r}")
        validate.callable_or_none(on_decision, "on_decision", "taking the decision")
        if not isinstance(name, str) or any(c in name for c in "{}\r\n"):
            raise ValueError(f"name must be text without braces or newlines, got {name!r}")
        if penalty and shadow:
            raise ValueError("penalty=True charges denials and shadow=True lets them through: pick one")
        self._ns = resolve(mount, client, asyncio=self._ASYNC)
        self._kind = f"rl:{name}" if name else "rl"
        self.policies: tuple[Policy, ...] = pols
        self.name = name
        self.on_error: OnError = on_error
        # failing open/closed: after 5 consecutive outages Redis is skipped for 1 s at a time
        self.breaker: CircuitBreaker | None = (
            None if on_error == "raise" else CircuitBreaker(name=f"limiter {self._label()}", log=log)
        )
        self.on_decision = on_decision
        self._mode = MODE_PENALTY if penalty else MODE_HIT
        self.shadow = bool(shadow)
        self._clock = _test_clock  # virtual µs clock: tests only, never set by the public API
        # the plain shape (no hook, no shadow, no breaker, server time) runs one prebuilt op
        self._plain = on_error == "raise" and on_decision is None and not shadow and _test_clock is None
        self._writable = self._ns.mount.mode != "read"
        self._cached_keys = functools.lru_cache(maxsize=4096)(self._make_keys)
        self._cached_ops = functools.lru_cache(maxsize=4096)(self._make_ops)

    def _label(self) -> str:
        return f"{self.name or '-'} ({', '.join(p.name for p in self.policies)})"

    @property
    def limit(self) -> int:
        """The smallest limit among the policies."""
        return min(p.limit for p in self.policies)

    def keys(self, key: str) -> tuple[str, ...]:
        """The Redis keys holding ``key``'s state (one per policy, one hash tag)."""
        if type(key) is not str:
            raise TypeError(f"the rate-limit key must be a str, not {type(key).__name__}")
        return self._cached_keys(key)

    def _make_keys(self, key: str) -> tuple[str, ...]:
        if not key:
            raise ValueError("the rate-limit key cannot be empty (e.g. 'user:42' or 'ip:10.0.0.1')")
        return _state_keys(self._ns.keyspace, self._kind, key, self.policies)

    def _make_ops(self, key: str) -> tuple[Script, Script]:
        """The prebuilt ops of ``key`` at cost 1: (hit in this limiter's mode, peek)."""
        keys = self.keys(key)
        return script_op(keys, self.policies, 1, self._mode), script_op(keys, self.policies, 1, MODE_PEEK)

    def _flow(self, key: str, cost: int, mode: int) -> Flow[Decision]:
        if mode == MODE_PEEK:
            self._ns.check_read("peek")
        elif not self._writable:
            self._ns.check_write("hit")
        if cost == 1 and type(key) is str and self._clock is None:
            ops = self._cached_ops(key)
            op = ops[1] if mode == MODE_PEEK else ops[0]
            if self._plain:
                return check(op, self.policies, 1, key, mode)
        else:
            op = script_op(self.keys(key), self.policies, check_cost(cost), mode,
                           None if self._clock is None else self._clock())  # fmt: skip
            if self._plain:
                return check(op, self.policies, cost, key, mode)
        return _hit_flow(
            op.keys, self.policies, cost, mode=mode, subject=key, on_error=self.on_error,  # type: ignore[arg-type]
            hook=self.on_decision, shadow=self.shadow and mode != MODE_PEEK, breaker=self.breaker, op=op,
        )  # fmt: skip

    def _reset(self, key: str) -> Flow[int]:
        self._ns.check_write("reset")
        return _reset_flow(self.keys(key))

    def _wait(self, key: str, cost: int, timeout: float | None, jitter: float) -> Flow[Decision]:
        self._ns.check_write("wait")
        timeout = validate.timeout(timeout)
        jitter = validate.fraction(jitter, "jitter")
        return _wait_flow(
            self.keys(key), self.policies, check_cost(cost), timeout=timeout, jitter=jitter,
            subject=key, now_us=self._clock, on_error=self.on_error, hook=self.on_decision,
            shadow=self.shadow, breaker=self.breaker,
        )  # fmt: skip

    def __repr__(self) -> str:
        pols = ", ".join(p.name for p in self.policies)
        return f"<{type(self).__name__} {pols} prefix={self._ns.prefix!r}>"


def _denied(d: Decision) -> RateLimited:
    when = "never" if d.retry_after is None else f"retry in {d.retry_after:.3f}s"
    return RateLimited(
        f"rate limited: {d.key!r} exceeds {', '.join(d.violated) or 'its limit'} ({when})",
        retry_after=d.retry_after,
        key=d.key,
        decision=d,
    )


def _enforce(d: Decision) -> Decision:
    if not d.allowed:
        raise _denied(d)
    return d


class MultiLimiter(_Base):
    """Several policies on one subject, checked atomically; a denial consumes nothing.

    ``MultiLimiter("5/second;1000/hour")`` (exact sliding logs; ``algorithm="token_bucket"``,
    ``"fixed"`` or ``"sliding_counter"`` for the others) or
    ``MultiLimiter([Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)])``.
    ``penalty=True`` charges denied requests too (an abusive caller stays blocked);
    ``shadow=True`` never denies: a denial comes back allowed with ``shadowed=True`` (dark launch).
    ``on_error``: ``"raise"`` (default), ``"open"`` (admit) or ``"closed"`` (deny) when Redis fails;
    the decision then has ``degraded=True``, and after 5 consecutive outages a circuit breaker
    skips Redis for a second at a time. ``on_decision(decision)`` is called after each check.
    """

    def hit(self, key: str, cost: int = 1) -> Decision:
        """Check ``key`` and consume ``cost`` units when every policy admits (cost 0 only checks)."""
        return run_sync(self._ns.client, self._flow(key, cost, self._mode))

    def peek(self, key: str, cost: int = 1) -> Decision:
        """What ``hit(key, cost)`` would decide now, without consuming anything."""
        return run_sync(self._ns.client, self._flow(key, cost, MODE_PEEK))

    def enforce(self, key: str, cost: int = 1) -> Decision:
        """``hit``, raising :class:`~redispatterns.RateLimited` when denied."""
        return _enforce(self.hit(key, cost))

    def reset(self, key: str) -> bool:
        """Forget ``key``'s state; True when there was some."""
        return run_sync(self._ns.client, self._reset(key)) > 0

    def wait(self, key: str, cost: int = 1, *, timeout: float | None = None, jitter: float = 0.1) -> Decision:
        """Block until admitted (sleeping ``retry_after`` plus jitter); ``RateLimited`` past ``timeout``."""
        return run_sync(self._ns.client, self._wait(key, cost, timeout, jitter))


class AsyncMultiLimiter(_Base):
    """The asyncio twin of :class:`MultiLimiter` (same methods, awaited)."""

    _ASYNC = True

    async def hit(self, key: str, cost: int = 1) -> Decision:
        return await run_async(self._ns.client, self._flow(key, cost, self._mode))

    async def peek(self, key: str, cost: int = 1) -> Decision:
        return await run_async(self._ns.client, self._flow(key, cost, MODE_PEEK))

    async def enforce(self, key: str, cost: int = 1) -> Decision:
        return _enforce(await self.hit(key, cost))

    async def reset(self, key: str) -> bool:
        return await run_async(self._ns.client, self._reset(key)) > 0

    async def wait(
        self, key: str, cost: int = 1, *, timeout: float | None = None, jitter: float = 0.1
    ) -> Decision:
        return await run_async(self._ns.client, self._wait(key, cost, timeout, jitter))


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


class _Sliding(_Base):
    @overload
    def __init__(self, limit: str, /, **options: Unpack[LimiterOptions]) -> None: ...
    @overload
    def __init__(self, limit: int, window: float, **options: Unpack[LimiterOptions]) -> None: ...
    def __init__(self, limit: int | str, window: float | None = None, **options: Any) -> None:
        _Base.__init__(self, [_window_policy(Policy.sliding, type(self).__name__, limit, window)], **options)


class _Fixed(_Base):
    @overload
    def __init__(self, limit: str, /, **options: Unpack[LimiterOptions]) -> None: ...
    @overload
    def __init__(self, limit: int, window: float, **options: Unpack[LimiterOptions]) -> None: ...
    def __init__(self, limit: int | str, window: float | None = None, **options: Any) -> None:
        _Base.__init__(self, [_window_policy(Policy.fixed, type(self).__name__, limit, window)], **options)


class _Counter(_Base):
    @overload
    def __init__(self, limit: str, /, **options: Unpack[LimiterOptions]) -> None: ...
    @overload
    def __init__(self, limit: int, window: float, **options: Unpack[LimiterOptions]) -> None: ...
    def __init__(self, limit: int | str, window: float | None = None, **options: Any) -> None:
        pol = _window_policy(Policy.sliding_counter, type(self).__name__, limit, window)
        _Base.__init__(self, [pol], **options)


class _Bucket(_Base):
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
        _Base.__init__(self, [pol], **options)


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


Limiter = MultiLimiter | AsyncMultiLimiter


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
