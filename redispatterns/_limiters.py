"""The limiter base: configuration, keys, prebuilt ops, and the sync/asyncio method sets
(:class:`MultiLimiter`, :class:`AsyncMultiLimiter`). The single-algorithm classes and the
decorator build on it; users import all of them from :mod:`redispatterns.ratelimit`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

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
    check,
    check_cost,
    log,
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

__all__ = ["AsyncMultiLimiter", "Limiter", "LimiterBase", "LimiterOptions", "MultiLimiter"]

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


class LimiterBase:
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
        """The prebuilt ops of ``key`` at cost 1: (hit in this limiter's mode, peek). ASCII keys
        are bytes, as the arguments are: redis-py sends bytes as they are and encodes a str on
        every call (any other key stays a str, encoded as the client's encoding says)."""
        keys = tuple(k.encode() if k.isascii() else k for k in self.keys(key))
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


class MultiLimiter(LimiterBase):
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


class AsyncMultiLimiter(LimiterBase):
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


Limiter = MultiLimiter | AsyncMultiLimiter
