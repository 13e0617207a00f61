"""Rate limiting, sans I/O: policies, the decision and the flows (the oracles are in ``tests/``).

One Lua script (``lua/ratelimit_hit.lua``) evaluates every policy of a subject against the
server's clock (``TIME``, integer microseconds) and, only when every policy admits, consumes
``cost`` from each: one EVALSHA per hit or peek. Three algorithms share it:

* ``sliding`` — an exact sliding log on a sorted set: never more than ``limit`` units in any
  trailing ``window``; a denial records nothing (unless penalty mode); ``retry_after`` comes from
  the entry that must leave; the key's TTL is the window.
* ``token_bucket`` — GCRA (one integer: the theoretical arrival time, in µs): a bucket of
  ``capacity`` tokens refilled at ``rate`` per ``per`` seconds. It admits exactly what a token
  bucket admits; with ``capacity == limit`` up to ``2*limit - 1`` may pass in a trailing window
  (a full bucket, then the refill), ``capacity=1`` paces smoothly.
* ``fixed`` — a window aligned to the epoch (per minute starts on the minute); ``reset_after``
  is the time to the window's end; up to ``2*limit`` can pass around a boundary.
* ``sliding_counter`` — Cloudflare's approximation: the previous aligned window's count, weighted
  by how much of it still overlaps the trailing window, plus the current count. Constant memory;
  it may admit up to about ``2*limit`` in a trailing window under adversarial timing, and may
  refuse early when the previous window's traffic came early.
"""

from __future__ import annotations

import functools
import math
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .breaker import CircuitBreaker, is_outage, open_error
from .keys import Keyspace
from .ops import Compute, Flow, Now, Script, Sleep
from .scripts import load

__all__ = [
    "ALGORITHMS",
    "MODE_HIT",
    "MODE_PEEK",
    "MODE_PENALTY",
    "Decision",
    "Policy",
    "PolicyState",
    "hit",
    "reset",
    "retry_delay",
    "state_keys",
    "wait",
]

Algorithm = Literal["sliding", "token_bucket", "fixed", "sliding_counter"]
ALGORITHMS: tuple[str, ...] = ("sliding", "token_bucket", "fixed", "sliding_counter")
_KIND = {"sliding": 1, "token_bucket": 2, "fixed": 3, "sliding_counter": 4}
_SUFFIX = {"sliding": "sw", "token_bucket": "tb", "fixed": "fw", "sliding_counter": "sc"}
EXACT_INT = 2**53  # doubles (Lua numbers) are exact integers below this

MODE_PEEK = 0
MODE_HIT = 1
MODE_PENALTY = 2

US = 1_000_000
MAX_LIMIT = 10**9
MAX_PERIOD_US = 10 * 366 * 86400 * US  # ten years: keeps every sum far below 2**53


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _count(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or value > MAX_LIMIT:
        raise ValueError(f"{name} must be between {minimum} and {MAX_LIMIT}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Policy:
    """One limit: ``limit`` units per ``window`` seconds under ``algorithm``.

    For ``token_bucket``, ``limit`` is the capacity (burst) and ``period_us`` the emission
    interval (µs per token, rounded to an integer, at least 1); ``window`` is the time to refill
    an empty bucket. Build with :meth:`sliding`, :meth:`token_bucket` or :meth:`fixed`.
    """

    algorithm: Algorithm
    limit: int
    period_us: int
    name: str

    def __post_init__(self) -> None:
        if self.algorithm not in _KIND:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        _count("limit", self.limit)
        if isinstance(self.period_us, bool) or not isinstance(self.period_us, int):
            raise TypeError("period_us must be an int")
        if not 1 <= self.period_us <= MAX_PERIOD_US or self.window_us > MAX_PERIOD_US:
            raise ValueError("window out of range: between 1 µs and ten years")
        if self.algorithm == "sliding_counter" and self.limit * self.period_us >= EXACT_INT:
            raise ValueError(
                f"limit x window too large for the sliding counter's exact arithmetic "
                f"({self.limit} per {self.period_us / US:g}s): use a token bucket"
            )
        if not isinstance(self.name, str) or not self.name or not self.name.isprintable() or '"' in self.name:
            raise ValueError(f"policy name must be printable text without quotes, got {self.name!r}")

    @classmethod
    def sliding(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """At most ``limit`` units in any trailing ``window`` seconds (exact, sorted-set log)."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("sliding", limit, period, name or f"{limit}-per-{_secs(period)}s")

    @classmethod
    def token_bucket(
        cls, rate: float, capacity: int | None = None, *, per: float = 1.0, name: str | None = None
    ) -> Policy:
        """A bucket of ``capacity`` tokens (default: ``ceil(rate)``) refilled at ``rate`` per ``per`` s."""
        _number("rate", rate)
        _number("per", per)
        cap = math.ceil(rate) if capacity is None else capacity
        _count("capacity", cap)
        interval = round(per * US / rate)
        if interval < 1:
            raise ValueError(f"rate {rate} per {per}s is above one token per microsecond")
        return cls("token_bucket", cap, interval, name or f"bucket-{cap}-{_rate_text(rate, per)}")

    @classmethod
    def fixed(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """At most ``limit`` units per clock-aligned window of ``window`` seconds."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("fixed", limit, period, name or f"{limit}-per-{_secs(period)}s-fixed")

    @classmethod
    def sliding_counter(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """About ``limit`` per trailing ``window`` (Cloudflare's two-counter estimate; 2 integers)."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("sliding_counter", limit, period, name or f"{limit}-per-{_secs(period)}s-approx")

    @property
    def kind(self) -> int:
        return _KIND[self.algorithm]

    @property
    def window_us(self) -> int:
        """The quota window: the sliding/fixed window, or the time to refill an empty bucket."""
        return self.period_us * self.limit if self.algorithm == "token_bucket" else self.period_us

    @property
    def window(self) -> float:
        return self.window_us / US

    @property
    def key_suffix(self) -> str:
        """Identifies the state's format and parameters, so a changed policy starts fresh."""
        return f"{_SUFFIX[self.algorithm]}:{self.limit}:{self.period_us}"

    def header_item(self) -> str:
        """This policy as an item of the IETF ``RateLimit-Policy`` field."""
        return f'"{self.name}";q={self.limit};w={max(1, math.ceil(self.window_us / US))}'


def _period(name: str, seconds: object) -> int:
    value = _number(name, seconds)
    period = round(value * US)
    if period < 1:
        raise ValueError(f"{name} must be at least one microsecond")
    return period


def _secs(period_us: int) -> str:
    return str(period_us // US) if period_us % US == 0 else f"{period_us / US:g}"


def _rate_text(rate: float, per: float) -> str:
    return f"{rate:g}-per-{per:g}s"


# Decisions are built on every check: plain slotted dataclasses (a frozen one costs ~2 µs more
# per instance on CPython 3.11). Treat them as read-only values.


@dataclass(slots=True)
class PolicyState:
    """One policy's part of a decision (times in integer microseconds)."""

    policy: Policy
    allowed: bool
    remaining: int
    retry_after_us: int | None  # 0 when admitted, None when never
    reset_after_us: int

    @property
    def retry_after(self) -> float | None:
        return None if self.retry_after_us is None else self.retry_after_us / US

    @property
    def reset_after(self) -> float:
        return self.reset_after_us / US


def _ceil_s(us: int) -> int:
    return -(-us // US)


@dataclass(slots=True)
class Decision:
    """The answer to one hit or peek, from the same round trip.

    ``retry_after`` is seconds until the same request would be admitted (``0.0`` when admitted,
    ``None`` when never: the cost exceeds a policy's limit); ``reset_after`` is seconds until the
    most restrictive policy is whole again; ``remaining`` and ``limit`` are the most restrictive
    policy's. ``violated`` names every policy that denied. ``degraded`` is set when Redis failed
    and ``on_error`` decided.
    """

    allowed: bool
    remaining: int
    retry_after_us: int | None
    reset_after_us: int
    limit: int
    key: str = ""
    cost: int = 1
    policies: tuple[PolicyState, ...] = ()
    now_us: int = 0
    degraded: bool = False
    error: BaseException | None = field(default=None, compare=False)
    shadowed: bool = False  # shadow mode let through a request the policies denied

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def retry_after(self) -> float | None:
        return None if self.retry_after_us is None else self.retry_after_us / US

    @property
    def reset_after(self) -> float:
        return self.reset_after_us / US

    @property
    def violated(self) -> tuple[str, ...]:
        return tuple(p.policy.name for p in self.policies if not p.allowed)

    @property
    def policy(self) -> Policy | None:
        """The most restrictive policy (the one ``remaining`` and ``limit`` describe)."""
        return _tightest(self.policies).policy if self.policies else None

    def headers(self, *, legacy: bool = False) -> dict[str, str]:
        """HTTP fields: ``RateLimit-Policy`` and ``RateLimit`` (IETF draft), ``Retry-After`` on denial.

        ``Retry-After`` is whole seconds rounded up, at least 1 (absent when never admissible).
        ``legacy=True`` adds ``X-RateLimit-Limit/-Remaining/-Reset``.
        """
        h: dict[str, str] = {}
        if self.policies:
            h["RateLimit-Policy"] = ", ".join(p.policy.header_item() for p in self.policies)
            h["RateLimit"] = ", ".join(
                f'"{p.policy.name}";r={p.remaining};t={_ceil_s(p.reset_after_us)}' for p in self.policies
            )
        if not self.allowed and self.retry_after_us is not None:
            h["Retry-After"] = str(max(1, _ceil_s(self.retry_after_us)))
        if legacy and self.policies:
            h["X-RateLimit-Limit"] = str(self.limit)
            h["X-RateLimit-Remaining"] = str(self.remaining)
            h["X-RateLimit-Reset"] = str(_ceil_s(self.reset_after_us))
        return h


def _tightest(states: Sequence[PolicyState]) -> PolicyState:
    return min(states, key=lambda s: (s.allowed, s.remaining, -s.reset_after_us))


def decide(key: str, cost: int, policies: Sequence[Policy], reply: Sequence[int]) -> Decision:
    """Build a :class:`Decision` from the script's reply (a list of integers)."""
    allowed = reply[1] == 1
    if len(policies) == 1:  # the common case, kept short: this runs on every check
        r = reply[4]
        t = PolicyState(policies[0], reply[2] == 1, reply[3], None if r < 0 else r, reply[5])
        retry: int | None = None if r < 0 else (0 if allowed else r)
        return Decision(
            allowed, t.remaining, retry, t.reset_after_us, t.policy.limit, key, cost, (t,), reply[0]
        )
    states = []
    never = False
    longest = 0
    for i, p in enumerate(policies):
        j = 2 + 4 * i
        r = reply[j + 2]
        if r < 0:
            never = True
        elif r > longest:
            longest = r
        states.append(PolicyState(p, reply[j] == 1, reply[j + 1], None if r < 0 else r, reply[j + 3]))
    t = _tightest(states)
    retry = None if never else (0 if allowed else longest)
    return Decision(
        allowed, t.remaining, retry, t.reset_after_us, t.policy.limit, key, cost, tuple(states), reply[0]
    )


def degraded(
    key: str, cost: int, policies: Sequence[Policy], allowed: bool, error: BaseException
) -> Decision:
    """The decision ``on_error="open"``/``"closed"`` gives when Redis cannot answer."""
    tight = min(policies, key=lambda p: p.limit)
    return Decision(
        allowed=allowed,
        remaining=0,
        retry_after_us=0 if allowed else tight.period_us,
        reset_after_us=0,
        limit=tight.limit,
        key=key,
        cost=cost,
        policies=(),
        degraded=True,
        error=error,
    )


def state_keys(keyspace: Keyspace, kind: str, subject: str, policies: Sequence[Policy]) -> tuple[str, ...]:
    """The state keys of ``subject``: one per policy, all under the subject's hash tag."""
    return tuple(keyspace.tagged(kind, subject, p.key_suffix) for p in policies)


def check_cost(cost: object) -> int:
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise TypeError(f"cost must be an int, not {type(cost).__name__}")
    if cost < 0 or cost > MAX_LIMIT:
        raise ValueError(f"cost must be between 0 and {MAX_LIMIT}, got {cost}")
    return cost


OnError = Literal["raise", "open", "closed"]


_SCRIPT = load("ratelimit_hit")


@functools.lru_cache(maxsize=256)
def _policy_args(policies: tuple[Policy, ...]) -> tuple[tuple[int, ...], bool]:
    """The script's per-policy ARGV, and whether any policy is a sliding log."""
    tail = tuple(x for p in policies for x in (p.kind, p.limit, p.period_us))
    return tail, any(p.kind == 1 for p in policies)


def hit(
    keys: tuple[str, ...],
    policies: tuple[Policy, ...],
    cost: int,
    *,
    mode: int = MODE_HIT,
    subject: str = "",
    now_us: int | None = None,
    on_error: OnError = "raise",
    hook: Callable[[Decision], Any] | None = None,
    shadow: bool = False,
    breaker: CircuitBreaker | None = None,
) -> Flow[Decision]:
    """Check ``subject`` against ``policies`` (one key each) and consume ``cost`` if all admit.

    ``mode``: :data:`MODE_HIT` (all or nothing), :data:`MODE_PENALTY` (a denial is charged too),
    :data:`MODE_PEEK` (evaluate ``cost`` without writing). ``now_us`` is a virtual clock for tests.
    ``shadow``: a denial is reported as allowed with ``shadowed=True`` (and, as any denial in
    hit mode, charges nothing): launch a limit dark, watch the hook, then enforce it.
    ``breaker`` (with ``on_error`` "open"/"closed"): while it is open, Redis is skipped and the
    degraded decision given at once, so a down or hung server costs microseconds, not a timeout.
    """
    tail, sliding = _policy_args(policies)
    # sliding-log members: 48 random bits per call (the random module reseeds after a fork)
    nonce = f"{random.getrandbits(48):012x}" if sliding else ""
    args = (cost, mode, nonce, "" if now_us is None else now_us, *tail)
    now = 0.0
    if breaker is not None and on_error != "raise":
        now = yield Now()
        if not breaker.allow(now):
            decision = degraded(subject, cost, policies, on_error == "open", open_error(breaker))
            if hook is not None:
                yield Compute(hook, (decision,))
            return decision
    try:
        reply = yield Script(_SCRIPT, keys=keys, args=args)
    except Exception as exc:
        if on_error == "raise":
            raise
        if breaker is not None and is_outage(exc):
            breaker.last_error = exc
            breaker.failure(now)
        decision = degraded(subject, cost, policies, on_error == "open", exc)
    else:
        if breaker is not None:
            breaker.success()
        decision = decide(subject, cost, policies, reply)
        if shadow and not decision.allowed:
            decision.allowed = decision.shadowed = True
    if hook is not None:
        yield Compute(hook, (decision,))
    return decision


def reset(keys: tuple[str, ...]) -> Flow[int]:
    """Forget ``keys`` (one ``DEL``); the number of keys removed."""
    from .ops import Command

    return int((yield Command("DEL", *keys, keys=keys)))


_RANDOM: Callable[[], float] = secrets.SystemRandom().random


def retry_delay(retry_after: float, jitter: float, rand: float) -> float:
    """How long :func:`wait` sleeps: ``retry_after`` plus up to ``jitter`` of it (``rand`` in [0, 1))."""
    return retry_after * (1.0 + jitter * rand)


def wait(
    keys: tuple[str, ...],
    policies: tuple[Policy, ...],
    cost: int,
    *,
    timeout: float | None,
    jitter: float = 0.1,
    rand: Callable[[], float] = _RANDOM,
    subject: str = "",
    now_us: Callable[[], int] | None = None,
    on_error: OnError = "raise",
    hook: Callable[[Decision], Any] | None = None,
    shadow: bool = False,
    breaker: CircuitBreaker | None = None,
) -> Flow[Decision]:
    """Hit until admitted, sleeping each denial's ``retry_after`` (plus jitter) in between.

    Raises :class:`~redispatterns.errors.RateLimited` when the cost can never be admitted or
    the next attempt would fall after ``timeout`` seconds.
    """
    from ..errors import RateLimited

    start = yield Now()
    while True:
        d = yield from hit(
            keys, policies, cost, subject=subject, now_us=None if now_us is None else now_us(),
            on_error=on_error, hook=hook, shadow=shadow, breaker=breaker,
        )  # fmt: skip
        if d.allowed:
            return d
        if d.retry_after is None:
            raise RateLimited(
                f"cost {cost} exceeds {', '.join(d.violated)}: never admitted",
                retry_after=None,
                key=subject,
                decision=d,
            )
        delay = retry_delay(d.retry_after, jitter, rand()) if d.retry_after > 0 else 0.001
        now = yield Now()
        if timeout is not None and (now - start) + d.retry_after > timeout:
            raise RateLimited(
                f"rate limited: {subject!r} would be admitted in {d.retry_after:.3f}s, "
                f"beyond the {timeout}s timeout",
                retry_after=d.retry_after,
                key=subject,
                decision=d,
            )
        if timeout is not None:
            delay = min(delay, max(0.0, timeout - (now - start)))
        yield Sleep(delay)
