"""Locks as flows: acquire with a fencing token, release, extend, waiting, renewal, Redlock math.

One lock ``name`` owns five keys, all under one hash tag so every script stays in one slot::

    <prefix>lock:{<name>}            the lock: our token, PX ttl ("handoff:<nonce>" while reserved)
    <prefix>lock:{<name>}:fence      the fencing counter (INCR in the acquire script, never expires)
    <prefix>lock:{<name>}:signal     the wake-up list: a release RPUSHes a nonce, waiters BLPOP
    <prefix>lock:{<name>}:waiters    set by a failed attempt for the holder's lease + a margin
    <prefix>lock:{<name>}:released   the last token released (so a retried release is idempotent)

Waiting never polls: a failed acquire marks "someone waits" and returns the holder's PTTL; the
waiter blocks on the signal list for at most that long (plus jitter). A release with waiters
does not free the lock: it reserves it for a short hand-over (``handoff:<nonce>``) and pushes
the nonce, which wakes the longest-blocked waiter (Redis serves BLPOP first come, first served);
that waiter presents the nonce and takes the lock, so a releaser that re-acquires at once cannot
barge in ahead of it. A release between a waiter's failed try and its block is not lost: the
nonce stays in the list for the hand-over time. An unused hand-over simply expires. Without
waiters a release just deletes the key (the uncontended path stays lean).

Everything time-critical is decided by pure functions below (renewal delays, wait bounds,
Redlock quorum and validity); the shells only run threads or tasks that follow them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LockNotOwned, LockTimeout
from . import validate
from .codec import as_str
from .keys import Keyspace, check_same_slot, hash_tag
from .ops import Command, Compute, Flow, Now, Script, Sleep
from .scripts import load

__all__ = [
    "DEFAULT_TTL",
    "MAX_BLOCK",
    "Grant",
    "LockKeys",
    "RedlockVote",
    "SemaphoreKeys",
    "acquire",
    "check_limit",
    "check_name",
    "check_ttl",
    "drift_ms",
    "extend",
    "fence_guard_key",
    "fenced_set",
    "get_raw",
    "handoff_ms",
    "holder",
    "lock_keys",
    "owned",
    "pttl",
    "quorum",
    "redlock_acquire",
    "redlock_release",
    "redlock_retry_delay",
    "redlock_validity_ms",
    "release",
    "renew_delay",
    "renew_retry_delay",
    "semaphore_acquire",
    "semaphore_count",
    "semaphore_extend",
    "semaphore_keys",
    "semaphore_release",
    "to_ms",
    "try_acquire",
    "valid_until",
    "wait_bound",
]

DEFAULT_TTL = 30.0
"""Seconds: a lock always expires (a crashed holder never deadlocks everyone)."""
MAX_BLOCK = 10.0
"""Longest single block on the signal list; a longer wait re-checks (one command per block)."""
DRIFT_FACTOR = 0.01
DRIFT_FIXED_MS = 2
MIN_BLOCK = 0.005
HANDOFF_MS = 250
WAITERS_MARGIN_MS = 200


@dataclass(frozen=True, slots=True)
class LockKeys:
    """The keys of one lock (one hash tag)."""

    lock: str
    fence: str
    signal: str
    released: str
    waiters: str


def check_name(name: object) -> str:
    return validate.name(name, "lock name", braces=False)


def check_ttl(ttl: object, what: str = "ttl") -> float:
    """A lease length (or another lock duration) in seconds, at least 10 ms."""
    why = " (a lock always expires)" if what == "ttl" else ""
    return validate.seconds(ttl, what, minimum=0.01, why=why)


def check_timeout(timeout: object) -> float | None:
    return validate.timeout(timeout)


def to_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def lock_keys(keyspace: Keyspace, name: str) -> LockKeys:
    keys = keyspace.family("lock", name, ("", "fence", "signal", "released", "waiters"))
    return LockKeys(*keys)


def handoff_ms(ttl_ms: int) -> int:
    """How long a release keeps the lock reserved for the waiter it woke: long enough for a
    busy waiter to answer, short enough that an abandoned hand-over costs little."""
    return max(1, min(ttl_ms, HANDOFF_MS))


def drift_ms(ttl_ms: int) -> int:
    """Clock-rate and expire-precision allowance: ttl·1% + 2 ms (the Redlock reference value)."""
    return int(ttl_ms * DRIFT_FACTOR) + DRIFT_FIXED_MS


def valid_until(sent_at: float, ttl_ms: int) -> float:
    """Monotonic deadline of a lease whose command was sent at ``sent_at`` (conservative)."""
    return sent_at + (ttl_ms - drift_ms(ttl_ms)) / 1000.0


# --------------------------------------------------------------------------- single node


def _script(name: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Script:
    """A ``Script`` op for keys already checked to share a slot (``lock_keys`` does it once).

    The hot path builds two of these per acquire + release; skipping the per-call slot check
    saves six CRC16s per cycle. ``Script(...)`` is still used wherever keys come from callers.
    """
    op = object.__new__(Script)
    object.__setattr__(op, "script", load(name))
    object.__setattr__(op, "keys", keys)
    object.__setattr__(op, "args", args)
    return op


@dataclass(frozen=True, slots=True)
class Grant:
    """A successful acquire: the fencing token and the monotonic time the request left."""

    fence: int
    sent_at: float


def _pair(reply: Any) -> tuple[int, int]:
    a, b = reply
    return int(a), int(b)


def _acquire_op(keys: LockKeys, token: str, ttl_ms: int, nonce: str, waiting: bool) -> Script:
    margin = WAITERS_MARGIN_MS if waiting else 0
    return _script(
        "lock_acquire", (keys.lock, keys.fence, keys.signal, keys.waiters), (token, ttl_ms, nonce, margin)
    )


def try_acquire(keys: LockKeys, token: str, ttl_ms: int, nonce: str = "") -> Flow[tuple[int, int]]:
    """One attempt that will not wait: ``(fence, 0)`` when taken, ``(0, holder_pttl_ms)`` when
    held or reserved (it does not mark itself as a waiter)."""
    return _pair((yield _acquire_op(keys, token, ttl_ms, nonce, False)))


def _nonce(reply: Any) -> str:
    """The hand-over nonce in a BLPOP reply ``[key, nonce]`` (``""`` on a timeout)."""
    if not reply:
        return ""
    return as_str(reply[1])


def wait_bound(
    holder_pttl_ms: int, remaining: float | None, rand: float, max_block: float = MAX_BLOCK
) -> float:
    """Seconds to block on the signal list after a failed attempt.

    At most the holder's remaining lease (plus up to 10% / 50 ms of jitter so waiters do not
    retry in lock-step when a lease expires), at most the caller's remaining timeout and at most
    ``max_block``; never below 5 ms (``BLPOP 0`` would block forever). ``pttl < 0`` (a key
    without expiry, set by someone else) falls back to ``max_block``.
    """
    if holder_pttl_ms < 0:
        bound = max_block
    else:
        base = holder_pttl_ms / 1000.0
        bound = base + rand * min(0.05, 0.1 * base + 0.005)
    if remaining is not None:
        bound = min(bound, remaining)
    return max(MIN_BLOCK, min(bound, max_block))


def acquire(
    keys: LockKeys,
    token: str,
    ttl_ms: int,
    *,
    name: str,
    blocking: bool = True,
    timeout: float | None = None,
    wait: Callable[[str, float], Any] | None = None,
    max_block: float = MAX_BLOCK,
    rand: Callable[[], float] = random.random,
    started_at: float | None = None,
) -> Flow[Grant | None]:
    """Acquire, waiting (without polling) when ``blocking``; ``None`` when non-blocking fails.

    ``wait(signal_key, seconds)`` blocks until a release signal or the bound (the shell supplies
    it: a BLPOP on a connection whose socket timeout exceeds the block). Without it the flow
    sleeps for the bound. A blocking acquire that runs out of ``timeout`` raises ``LockTimeout``.
    ``started_at`` is the monotonic time of the call when the caller already read it (saves an
    op on the uncontended path); the lease deadline counts from the attempt that succeeded.
    """
    start: float = (yield Now()) if started_at is None else started_at
    deadline = None if timeout is None else start + timeout
    sent_at = start
    nonce = ""
    waiting = blocking and timeout != 0  # marks "someone waits" so a release hands over
    while True:
        fence, holder_ms = _pair((yield _acquire_op(keys, token, ttl_ms, nonce, waiting)))
        if fence:
            return Grant(fence, sent_at)
        if not blocking:
            return None
        now: float = yield Now()
        remaining = None if deadline is None else deadline - now
        if remaining is not None and remaining <= 0:
            raise LockTimeout(
                f"lock {name!r} is held by another owner; gave up after {timeout} s",
                name=name,
                timeout=timeout,
            )
        bound = wait_bound(holder_ms, remaining, rand(), max_block)
        if wait is not None:
            nonce = _nonce((yield Compute(wait, (keys.signal, bound))))
        else:
            yield Sleep(bound)
        sent_at = yield Now()


def release(keys: LockKeys, token: str, ttl_ms: int, *, name: str) -> Flow[bool]:
    """Compare-and-delete. True when released now, False when a retry found it already released.

    Raises ``LockNotOwned`` when another owner holds the lock, or when our lease had expired.
    """
    code = yield _script(
        "lock_release",
        (keys.lock, keys.signal, keys.released, keys.waiters),
        (token, max(ttl_ms, 1000), handoff_ms(ttl_ms)),
    )
    code = int(code)
    if code == 1:
        return True
    if code == 2:
        return False
    if code < 0:
        raise LockNotOwned(f"lock {name!r} is held by another owner: our lease had expired", name=name)
    raise LockNotOwned(f"lock {name!r} was not held: our lease had expired before the release", name=name)


def extend(keys: LockKeys, token: str, ttl_ms: int, *, name: str) -> Flow[float]:
    """Compare-and-PEXPIRE (never recreates the key). Returns the send time for the new deadline."""
    sent_at: float = yield Now()
    code = int((yield Script(load("lock_extend"), keys=(keys.lock,), args=(token, ttl_ms))))
    if code == 1:
        return sent_at
    if code < 0:
        raise LockNotOwned(f"cannot extend lock {name!r}: another owner holds it", name=name)
    raise LockNotOwned(f"cannot extend lock {name!r}: our lease expired (it is not recreated)", name=name)


def holder(keys: LockKeys) -> Flow[str | None]:
    """The current holder's token, or None when free."""
    raw = yield Command("GET", keys.lock)
    return None if raw is None else as_str(raw)


def get_raw(key: str) -> Flow[bytes | None]:
    """The raw value of ``key`` (for fenced resources), or None."""
    raw = yield Command("GET", key)
    return None if raw is None else (raw if isinstance(raw, bytes) else as_str(raw).encode())


def owned(keys: LockKeys, token: str) -> Flow[bool]:
    return (yield from holder(keys)) == token


def pttl(keys: LockKeys) -> Flow[float | None]:
    """Seconds left on the lease; None when the lock is free."""
    ms = int((yield Command("PTTL", keys.lock)))
    if ms == -2:
        return None
    if ms == -1:
        return math.inf
    return ms / 1000.0


def fence_guard_key(key: str) -> str:
    """The key holding the highest fence accepted for ``key``, in ``key``'s slot."""
    guard = key + ":fence" if hash_tag(key) is not None else "{" + key + "}:fence"
    check_same_slot((key, guard))
    return guard


def fenced_set(key: str, value: bytes, fence: int, ttl_ms: int = 0) -> Flow[bool]:
    """Write ``value`` iff ``fence`` is not older than the last fence accepted for ``key``."""
    ok = yield Script(load("lock_fenced_set"), keys=(key, fence_guard_key(key)), args=(fence, value, ttl_ms))
    return int(ok) == 1


# --------------------------------------------------------------------------- renewal


def renew_delay(ttl: float, rand: float) -> float:
    """Renew at about ttl/3, jittered ±10% so many holders do not renew in step."""
    return ttl / 3.0 * (0.9 + 0.2 * rand)


def renew_retry_delay(valid_for: float, attempt: int, rand: float) -> float | None:
    """After a transient renewal error: retry soon while the lease is still valid, else give up.

    Returns the delay before the next try, or None when the lease cannot be saved any more.
    """
    if valid_for <= 0:
        return None
    backoff: float = min(0.5, 0.02 * (2**attempt)) * (0.5 + rand / 2)
    return min(backoff, max(valid_for / 4, 0.001))


# --------------------------------------------------------------------------- Redlock


def quorum(n: int) -> int:
    """Votes needed out of ``n`` masters: a strict majority."""
    return n // 2 + 1


def redlock_validity_ms(ttl_ms: int, elapsed_s: float) -> int:
    """validity = ttl - elapsed - drift (milliseconds; <= 0 means the lease is already unsafe)."""
    return ttl_ms - math.ceil(elapsed_s * 1000) - drift_ms(ttl_ms)


def redlock_retry_delay(base: float, rand: float) -> float:
    """A random delay in [base/2, base·1.5): breaks symmetric split votes between clients."""
    return base * (0.5 + rand)


@dataclass(frozen=True, slots=True)
class RedlockVote:
    """The outcome of one Redlock round."""

    votes: int
    nodes: int
    validity_ms: int
    elapsed: float
    ended_at: float = 0.0

    @property
    def deadline(self) -> float:
        """Monotonic time the quorum lease stops being safe: round start + ttl - drift."""
        return self.ended_at + self.validity_ms / 1000.0

    @property
    def acquired(self) -> bool:
        return self.votes >= quorum(self.nodes) and self.validity_ms > 0


def redlock_acquire(
    fanout: Callable[[str, Sequence[Any]], Any],
    token: str,
    ttl_ms: int,
    *,
    name: str,
    retries: int,
    retry_delay: float,
    timeout: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Flow[RedlockVote]:
    """The Redlock round, retried: ``fanout(action, args)`` runs ``action`` on every master in
    parallel with per-node timeouts and returns one result per node (True/False, or an
    exception). On failure every node is released (the SET may have landed on an errored node),
    then a random delay; after ``retries`` more rounds (or ``timeout``) ``LockTimeout``.
    """
    start: float = yield Now()
    attempt = 0
    last: RedlockVote | None = None
    while True:
        t0: float = yield Now()
        results = yield Compute(fanout, ("acquire", (token, ttl_ms)))
        t1: float = yield Now()
        votes = sum(1 for r in results if r is True)
        vote = RedlockVote(votes, len(results), redlock_validity_ms(ttl_ms, t1 - t0), t1 - t0, t1)
        if vote.acquired:
            return vote
        last = vote
        yield Compute(fanout, ("release", (token,)))
        attempt += 1
        delay = redlock_retry_delay(retry_delay, rand())
        now: float = yield Now()
        out_of_time = timeout is not None and now + delay - start > timeout
        if attempt > retries or out_of_time:
            raise LockTimeout(
                f"Redlock {name!r}: {last.votes} of {last.nodes} masters agreed (need {quorum(last.nodes)}), "
                f"validity {last.validity_ms} ms, after {attempt} round(s)",
                name=name,
                timeout=timeout,
            )
        yield Sleep(delay)


def redlock_release(fanout: Callable[[str, Sequence[Any]], Any], token: str) -> Flow[int]:
    """Release on every master; returns how many still held our token."""
    results = yield Compute(fanout, ("release", (token,)))
    return sum(1 for r in results if r is True)


def redlock_extend(
    fanout: Callable[[str, Sequence[Any]], Any], token: str, ttl_ms: int, *, name: str
) -> Flow[RedlockVote]:
    """Extend on every master; counts only when a majority extended within the new validity."""
    t0: float = yield Now()
    results = yield Compute(fanout, ("extend", (token, ttl_ms)))
    t1: float = yield Now()
    votes = sum(1 for r in results if r is True)
    vote = RedlockVote(votes, len(results), redlock_validity_ms(ttl_ms, t1 - t0), t1 - t0, t1)
    if not vote.acquired:
        raise LockNotOwned(
            f"Redlock {name!r}: {votes} of {len(results)} masters extended, "
            f"need {quorum(len(results))} within the validity",
            name=name,
        )
    return vote


def node_acquire(key: str, token: str, ttl_ms: int) -> Flow[bool]:
    """One Redlock master: plain SET NX PX (the spec's command)."""
    return (yield Command("SET", key, token, "NX", "PX", ttl_ms)) is not None


def node_release(key: str, token: str) -> Flow[bool]:
    """One Redlock master: compare-and-delete."""
    return int((yield Script(load("lock_delete_if"), keys=(key,), args=(token,)))) == 1


def node_extend(key: str, token: str, ttl_ms: int) -> Flow[bool]:
    return int((yield Script(load("lock_extend"), keys=(key,), args=(token, ttl_ms)))) == 1


# --------------------------------------------------------------------------- semaphore


@dataclass(frozen=True, slots=True)
class SemaphoreKeys:
    """The keys of one semaphore (one hash tag)."""

    leases: str
    signal: str
    waiters: str


def semaphore_keys(keyspace: Keyspace, name: str) -> SemaphoreKeys:
    return SemaphoreKeys(*keyspace.family("semaphore", name, ("", "signal", "waiters")))


def check_limit(limit: object) -> int:
    return validate.count(limit, "limit")


def semaphore_acquire(
    keys: SemaphoreKeys,
    token: str,
    ttl_ms: int,
    limit: int,
    *,
    name: str,
    blocking: bool = True,
    timeout: float | None = None,
    wait: Callable[[str, float], Any] | None = None,
    max_block: float = MAX_BLOCK,
    rand: Callable[[], float] = random.random,
    started_at: float | None = None,
) -> Flow[float | None]:
    """Take one of ``limit`` leases; the send time of the winning attempt, or None (non-blocking).

    A full semaphore answers how long until its earliest lease expires; the waiter blocks on the
    signal list (a release pushes one entry when someone waits) for at most that long.
    """
    start: float = (yield Now()) if started_at is None else started_at
    deadline = None if timeout is None else start + timeout
    sent_at = start
    margin = WAITERS_MARGIN_MS if blocking and timeout != 0 else 0
    while True:
        reply = yield _script(
            "semaphore_acquire", (keys.leases, keys.waiters), (token, ttl_ms, limit, margin)
        )
        ok, wait_ms = _pair(reply)
        if ok:
            return sent_at
        if not blocking:
            return None
        now: float = yield Now()
        remaining = None if deadline is None else deadline - now
        if remaining is not None and remaining <= 0:
            raise LockTimeout(
                f"semaphore {name!r}: all {limit} leases are taken; gave up after {timeout} s",
                name=name,
                timeout=timeout,
            )
        bound = wait_bound(wait_ms, remaining, rand(), max_block)
        if wait is not None:
            yield Compute(wait, (keys.signal, bound))
        else:
            yield Sleep(bound)
        sent_at = yield Now()


def semaphore_release(keys: SemaphoreKeys, token: str, limit: int, *, name: str) -> Flow[None]:
    """Give the lease back; ``LockNotOwned`` when it had expired (its slot may be someone else's)."""
    code = yield _script(
        "semaphore_release", (keys.leases, keys.signal, keys.waiters), (token, HANDOFF_MS * 4, limit)
    )
    if int(code) != 1:
        raise LockNotOwned(f"semaphore {name!r}: our lease had expired before the release", name=name)


def semaphore_extend(keys: SemaphoreKeys, token: str, ttl_ms: int, *, name: str) -> Flow[float]:
    """Push the lease's expiry out (never revives an expired lease); returns the send time."""
    sent_at: float = yield Now()
    code = yield _script("semaphore_extend", (keys.leases,), (token, ttl_ms))
    if int(code) != 1:
        raise LockNotOwned(
            f"cannot extend semaphore {name!r}: our lease expired (it is not revived)", name=name
        )
    return sent_at


def semaphore_count(keys: SemaphoreKeys) -> Flow[int]:
    """Live leases now (by the server's clock)."""
    us = yield Script(load("core_time"))
    return int((yield Command("ZCOUNT", keys.leases, f"({int(us) // 1000}", "+inf")))
