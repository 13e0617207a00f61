"""Rate limiting, sans I/O: the decision and the flows (policies are in ``ratelimit_policy``;
the oracles are in ``tests/``).

One EVALSHA per hit or peek, against the server's clock (``TIME``, integer microseconds). A
limiter with one policy sends its algorithm's own script, with two arguments for a hit of cost 1
(limit, period) and four otherwise (then cost, mode); several policies go to
``lua/ratelimit_multi.lua``, which evaluates every one and, only when all admit, consumes
``cost`` from each. The token bucket, the fixed window and the sliding counter keep one integer
per subject and charge a hit first with an in-place ``INCRBY`` (undone on a denial), so a
counted hit costs ``TIME`` and ``INCRBY`` on the server:

* ``sliding`` (``lua/ratelimit_log.lua``) — an exact sliding log on a sorted set: never more
  than ``limit`` units in any trailing ``window``; a denial records nothing (unless penalty
  mode); ``retry_after`` comes from the entry that must leave; the key lives one to two
  windows after the newest entry.
* ``token_bucket`` (``lua/ratelimit_bucket.lua``) — GCRA (one integer: the theoretical arrival
  time, in µs): a bucket of ``capacity`` tokens refilled at ``rate`` per ``per`` seconds. It
  admits exactly what a token bucket admits; with ``capacity == limit`` up to ``2*limit - 1``
  may pass in a trailing window (a full bucket, then the refill), ``capacity=1`` paces smoothly.
* ``fixed`` (``lua/ratelimit_fixed.lua``) — a window aligned to the epoch (per minute starts on
  the minute); ``reset_after`` is the time to the window's end; up to ``2*limit`` can pass
  around a boundary.
* ``sliding_counter`` (``lua/ratelimit_counter.lua``) — Cloudflare's approximation: the previous
  aligned window's count, weighted by how much of it still overlaps the trailing window, plus the
  current count. Constant memory; it may admit up to about ``2*limit`` in a trailing window under
  adversarial timing, and may refuse early when the previous window's traffic came early.

Garbage under a limiter key (another type, unreadable text) counts as no state, the next
charged hit replaces it, and it is logged once on the ``redispatterns.ratelimit`` logger.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .breaker import CircuitBreaker, is_outage, open_error
from .keys import Keyspace
from .ops import Compute, Flow, Now, Script, Sleep, trusted_script
from .ratelimit_policy import (
    ALGORITHMS,
    MAX_LIMIT,
    MODE_HIT,
    MODE_PEEK,
    MODE_PENALTY,
    US,
    Policy,
    parse_rate,
    parse_rates,
)
from .scripts import LuaScript, load

__all__ = [
    "ALGORITHMS",
    "MODE_HIT",
    "MODE_PEEK",
    "MODE_PENALTY",
    "Decision",
    "Policy",
    "PolicyState",
    "check",
    "hit",
    "parse_rate",
    "parse_rates",
    "reset",
    "retry_delay",
    "script_op",
    "state_keys",
    "wait",
]

log = logging.getLogger("redispatterns.ratelimit")

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


def _order(s: PolicyState) -> tuple[bool, int, int]:
    return s.allowed, s.remaining, -s.reset_after_us


def _tightest(states: Sequence[PolicyState]) -> PolicyState:
    return min(states, key=_order)


def _bucket(key: str, cost: int, p: Policy, x: int, now_us: int) -> Decision:
    """Decode the token bucket's integer reply: x = tat - now (>= 0 admitted, -x - 1 denied)."""
    interval = p.period_us
    tau = p.limit * interval
    if x >= 0:
        t = PolicyState(p, True, (tau - x) // interval, 0, x)
        return Decision(True, t.remaining, 0, x, p.limit, key, cost, (t,), now_us)
    x = -x - 1
    retry = None if cost > p.limit else x + cost * interval - tau
    t = PolicyState(p, False, (tau - x) // interval, retry, x)
    return Decision(False, t.remaining, retry, x, p.limit, key, cost, (t,), now_us)


def _fixed(key: str, cost: int, p: Policy, x: int, now_us: int) -> Decision:
    """Decode the fixed window's integer reply: count * window + reset - 1 (negated - 1: denied)."""
    allowed = x >= 0
    count, r = divmod(x if allowed else -x - 1, p.period_us)
    remaining = max(p.limit - count, 0)
    retry = 0 if allowed else (None if cost > p.limit else r + 1)
    t = PolicyState(p, allowed, remaining, retry, r + 1)
    return Decision(allowed, remaining, retry, r + 1, p.limit, key, cost, (t,), now_us)


def _log(key: str, cost: int, p: Policy, x: int, now_us: int) -> Decision:
    """Decode the sliding log's integer reply: admitted and recorded, ``x`` units remain."""
    t = PolicyState(p, True, x, 0, p.period_us)
    return Decision(True, x, 0, p.period_us, p.limit, key, cost, (t,), now_us)


def _counter(key: str, cost: int, p: Policy, x: int, now_us: int) -> Decision:
    """Decode the sliding counter's integer reply: admitted, remaining * 2 * window + reset - 1."""
    remaining, r = divmod(x, 2 * p.period_us)
    t = PolicyState(p, True, remaining, 0, r + 1)
    return Decision(True, remaining, 0, r + 1, p.limit, key, cost, (t,), now_us)


def _log_denied(key: str, cost: int, p: Policy, reply: Sequence[int], now_us: int) -> Decision:
    """Decode the sliding log's denial of a hit of cost 1: ``[retry_after_us, reset_after_us]``."""
    retry, reset = reply
    t = PolicyState(p, False, 0, retry, reset)
    return Decision(False, 0, retry, reset, p.limit, key, cost, (t,), now_us)


_INT_REPLIES = {"token_bucket": _bucket, "fixed": _fixed, "sliding": _log, "sliding_counter": _counter}


def _log_ok(p: Policy, x: int) -> PolicyState:
    return PolicyState(p, True, x, 0, p.period_us)


def _bucket_ok(p: Policy, x: int) -> PolicyState:
    per = p.period_us
    return PolicyState(p, True, (p.limit * per - x) // per, 0, x)


def _fixed_ok(p: Policy, x: int) -> PolicyState:
    count, r = divmod(x, p.period_us)
    return PolicyState(p, True, max(p.limit - count, 0), 0, r + 1)


def _counter_ok(p: Policy, x: int) -> PolicyState:
    remaining, r = divmod(x, 2 * p.period_us)
    return PolicyState(p, True, remaining, 0, r + 1)


# one policy's part of an admitted multi check, from what its own script answers for an
# admitted hit (see ``_log``, ``_bucket``, ``_fixed``, ``_counter``)
_ADMITTED = {
    "sliding": _log_ok,
    "token_bucket": _bucket_ok,
    "fixed": _fixed_ok,
    "sliding_counter": _counter_ok,
}


def _tighter(s: PolicyState, t: PolicyState) -> bool:
    """Whether admitted ``s`` is tighter than admitted ``t`` (as ``_tightest`` orders them)."""
    return s.remaining < t.remaining or (s.remaining == t.remaining and s.reset_after_us > t.reset_after_us)


def _all_admitted(
    key: str, cost: int, policies: Sequence[Policy], reply: Sequence[int], now_us: int
) -> Decision:
    """Decode the multi script's short reply: every policy admitted, one integer each. Two
    policies, the common pair, are decoded without a loop: this runs on every such check."""
    if len(policies) == 2:
        p, q = policies
        s, u = _ADMITTED[p.algorithm](p, reply[0]), _ADMITTED[q.algorithm](q, reply[1])
        t = u if _tighter(u, s) else s  # the first on ties
        return Decision(True, t.remaining, 0, t.reset_after_us, t.policy.limit, key, cost, (s, u), now_us)
    states = tuple([_ADMITTED[p.algorithm](p, x) for p, x in zip(policies, reply, strict=True)])
    t = states[0]
    for s in states[1:]:
        if _tighter(s, t):
            t = s
    return Decision(True, t.remaining, 0, t.reset_after_us, t.policy.limit, key, cost, states, now_us)


def decide(
    key: str, cost: int, policies: Sequence[Policy], reply: Sequence[int] | int, now_us: int = 0
) -> Decision:
    """Build a :class:`Decision` from a script's reply (a list of integers).

    One policy: ``[now, remaining, retry_after_us, reset_after_us]`` (admitted iff the retry is
    0), or one integer (the bucket, the fixed window, an admitted log or counter check: see
    their scripts; ``now_us`` is then the virtual clock, if any); several:
    ``[now, allowed, (allowed, remaining, retry_after_us, reset_after_us) per policy]``; a
    trailing ``1`` past those says some key held garbage; or, from the multi script, one
    integer per policy when every one admitted a hit of cost 1 (each as its own script's); or,
    from the sliding log, ``[retry_after_us, reset_after_us]`` for a denied hit of cost 1.
    """
    if isinstance(reply, int):  # one-integer replies (see the scripts)
        return _INT_REPLIES[policies[0].algorithm](key, cost, policies[0], reply, now_us)
    if len(reply) == len(policies) > 1:  # the multi script's admitted hit: one integer per policy
        return _all_admitted(key, cost, policies, reply, now_us)
    if len(reply) == 2 and len(policies) == 1:  # the sliding log's denied hit of cost 1
        return _log_denied(key, cost, policies[0], reply, now_us)
    if len(policies) == 1:  # the common case, kept short: this runs on every check
        r = reply[2]
        allowed = r == 0
        retry: int | None = None if r < 0 else r
        p = policies[0]
        t = PolicyState(p, allowed, reply[1], retry, reply[3])
        return Decision(allowed, reply[1], retry, reply[3], p.limit, key, cost, (t,), reply[0])
    allowed = reply[1] == 1
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


_SCRIPTS: dict[str, LuaScript] = {
    "sliding": load("ratelimit_log"),
    "token_bucket": load("ratelimit_bucket"),
    "fixed": load("ratelimit_fixed"),
    "sliding_counter": load("ratelimit_counter"),
}
_MULTI = load("ratelimit_multi")


def _b(x: int) -> bytes:
    return str(x).encode()


@functools.lru_cache(maxsize=256)
def _multi_args(policies: tuple[Policy, ...]) -> tuple[bytes, ...]:
    """The multi script's per-policy ARGV: limit * 10 + kind, then period, for each policy
    (as bytes: redis-py sends them as they are, an int is formatted on every call)."""
    return tuple(_b(x) for p in policies for x in (p.limit * 10 + p.kind, p.period_us))


@functools.lru_cache(maxsize=256)
def _one_args(p: Policy) -> tuple[bytes, bytes]:
    """One policy's ARGV for a hit of cost 1 (limit, period), as bytes."""
    return _b(p.limit), _b(p.period_us)


def script_op(
    keys: tuple[str | bytes, ...],
    policies: tuple[Policy, ...],
    cost: int,
    mode: int = MODE_HIT,
    now_us: int | None = None,
) -> Script:
    """The one EVALSHA that checks ``policies`` (one key each): the algorithm's own script for
    one policy (ARGV limit, period[, cost, mode[, virtual now]]: a hit of cost 1 sends two
    arguments), the multi script for several. ``keys`` are :func:`state_keys`' (one subject's
    hash tag: one slot by construction), so the op skips ``Script``'s slot check (a CRC16 a key,
    on every first hit of a subject)."""
    if len(policies) == 1:
        p = policies[0]
        if now_us is not None:
            return trusted_script(_SCRIPTS[p.algorithm], keys, (p.limit, p.period_us, cost, mode, now_us))
        if cost == 1 and mode == MODE_HIT:
            return trusted_script(_SCRIPTS[p.algorithm], keys, _one_args(p))
        return trusted_script(_SCRIPTS[p.algorithm], keys, (*_one_args(p), _b(cost), _b(mode)))
    if now_us is not None:
        return trusted_script(_MULTI, keys, (*_multi_args(policies), cost, mode, now_us))
    if cost == 1 and mode == MODE_HIT:
        return trusted_script(_MULTI, keys, _multi_args(policies))
    return trusted_script(_MULTI, keys, (*_multi_args(policies), _b(cost), _b(mode)))


# keys whose garbage was logged and not yet replaced (bounded): each episode is logged once
_garbled: dict[tuple[str, ...], None] = {}


def _note_garbage(raw_keys: tuple[str | bytes, ...], d: Decision, mode: int) -> None:
    # prebuilt ops carry their keys as bytes: one spelling here, so an episode is one entry
    keys = tuple(k.decode() if isinstance(k, bytes) else k for k in raw_keys)
    replaced = (
        mode != MODE_PEEK
        and d.cost > 0
        and d.retry_after_us is not None
        and (d.allowed or mode == MODE_PENALTY)
    )
    if keys in _garbled:
        if replaced:
            _garbled.pop(keys, None)
        return
    log.warning(
        "rate-limit state of %r under %s was unreadable (another type or garbage): treated as "
        "absent%s",
        d.key, ", ".join(keys), ", and replaced" if replaced else "; the next charged hit replaces it",
    )  # fmt: skip
    if not replaced:
        if len(_garbled) >= 1024:
            _garbled.pop(next(iter(_garbled)))
        _garbled[keys] = None


def check(op: Script, policies: tuple[Policy, ...], cost: int, subject: str, mode: int) -> Flow[Decision]:
    """The plain check: one prebuilt script op, its reply as a :class:`Decision`."""
    reply = yield op
    if type(reply) is int:
        p = policies[0]
        return _INT_REPLIES[p.algorithm](subject, cost, p, reply, op.args[4] if len(op.args) > 4 else 0)  # type: ignore[arg-type]
    n = len(policies)
    if len(reply) == n > 1:  # every policy admitted (the multi script's short reply)
        args = op.args
        return _all_admitted(subject, cost, policies, reply, args[2 * n + 2] if len(args) > 2 * n + 2 else 0)  # type: ignore[arg-type]
    if len(reply) == 2 and n == 1:  # the sliding log's denied hit of cost 1
        return _log_denied(subject, cost, policies[0], reply, op.args[4] if len(op.args) > 4 else 0)  # type: ignore[arg-type]
    d = decide(subject, cost, policies, reply)
    if len(reply) > (4 if len(policies) == 1 else 2 + 4 * len(policies)):
        _note_garbage(op.keys, d, mode)
    return d


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
    op: Script | None = None,
) -> Flow[Decision]:
    """Check ``subject`` against ``policies`` (one key each) and consume ``cost`` if all admit.

    ``mode``: :data:`MODE_HIT` (all or nothing), :data:`MODE_PENALTY` (a denial is charged too),
    :data:`MODE_PEEK` (evaluate ``cost`` without writing). ``now_us`` is a virtual clock for tests.
    ``shadow``: a denial is reported as allowed with ``shadowed=True`` (and, as any denial in
    hit mode, charges nothing): launch a limit dark, watch the hook, then enforce it.
    ``breaker`` (with ``on_error`` "open"/"closed"): while it is open, Redis is skipped and the
    degraded decision given at once, so a down or hung server costs microseconds, not a timeout.
    ``op``: the script op, when the caller prebuilt it (``script_op`` of the same arguments).
    """
    if op is None:
        op = script_op(keys, policies, cost, mode, now_us)
    now = 0.0
    if breaker is not None and on_error != "raise":
        now = yield Now()
        if not breaker.allow(now):
            decision = degraded(subject, cost, policies, on_error == "open", open_error(breaker))
            if hook is not None:
                yield Compute(hook, (decision,))
            return decision
    try:
        decision = yield from check(op, policies, cost, subject, mode)
    except Exception as exc:
        if on_error == "raise":
            raise
        if breaker is not None and is_outage(exc):
            # the clock after the failure: a timeout longer than the breaker's reset_after would
            # otherwise open it already due for a probe, and every call would wait a timeout
            breaker.failure((yield Now()), exc)
        decision = degraded(subject, cost, policies, on_error == "open", exc)
    else:
        if breaker is not None:
            breaker.success()
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
