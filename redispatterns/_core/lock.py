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

Everything time-critical is decided here: wait bounds, the wait loop that the semaphore shares
(:func:`wait_loop`), lease deadlines (:class:`Lease`) and auto-renewal (:func:`renewal`, a flow
that the runners' background driver runs). Redlock is in :mod:`._core.redlock`, the semaphore in
:mod:`._core.semaphore`.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LockLost, LockNotOwned, LockTimeout
from . import validate
from .codec import as_str
from .keys import Keyspace, check_same_slot, hash_tag
from .ops import MAX_BLOCK, MIN_BLOCK, BlockingPop, Command, Compute, Flow, Now, Script, Sleep, trusted_script
from .scripts import load

__all__ = [
    "DEFAULT_TTL",
    "MAX_BLOCK",
    "MIN_BLOCK",
    "Grant",
    "Lease",
    "LockKeys",
    "acquire",
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
    "lost_in_block",
    "ms_arg",
    "release",
    "renew_delay",
    "renew_retry_delay",
    "renewal",
    "to_ms",
    "try_acquire",
    "valid_until",
    "wait_bound",
    "wait_loop",
]

log = logging.getLogger("redispatterns.lock")
"""Lease losses, once per lease (WARNING). The library never configures it."""

DEFAULT_TTL = 30.0
"""Seconds: a lock always expires (a crashed holder never deadlocks everyone)."""
DRIFT_FACTOR = 0.01
DRIFT_FIXED_MS = 2
HANDOFF_MS = 250
WAITERS_MARGIN_MS = 200


@dataclass(frozen=True, slots=True)
class LockKeys:
    """The keys of one lock (one hash tag), and the key vectors of its scripts. The two hot
    vectors (``for_try``, ``for_release_try``) are UTF-8 bytes, encoded once per lock name:
    redis-py passes bytes through where it would encode a ``str`` on every call."""

    lock: str
    fence: str
    signal: str
    released: str
    waiters: str
    for_try: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    for_acquire: tuple[str, ...] = field(init=False, repr=False, compare=False)
    for_release_try: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    for_release: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lock, waiters = self.lock.encode(), self.waiters.encode()
        object.__setattr__(self, "for_try", (lock, self.fence.encode()))
        object.__setattr__(self, "for_acquire", (self.lock, self.fence, self.signal, self.waiters))
        object.__setattr__(self, "for_release_try", (lock, waiters, self.released.encode()))
        object.__setattr__(self, "for_release", (self.lock, self.signal, self.released, self.waiters))


def check_name(name: object) -> str:
    return validate.name(name, "lock name", braces=False)


def check_ttl(ttl: object, what: str = "ttl") -> float:
    """A lease length (or another lock duration) in seconds, at least 10 ms."""
    t = type(ttl)
    if (t is float or t is int) and 0.01 <= ttl <= validate.MAX_SECONDS:  # type: ignore[operator]
        return float(ttl)  # type: ignore[arg-type]  # the usual case, without the full check
    why = " (a lock always expires)" if what == "ttl" else ""
    return validate.seconds(ttl, what, minimum=0.01, why=why)


def check_timeout(timeout: object) -> float | None:
    return validate.timeout(timeout)


def to_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def lock_keys(keyspace: Keyspace, name: str) -> LockKeys:
    """The five keys of lock ``name``: one tagged key and suffixes after its tag, so they share
    a slot by construction. Cached per (prefix, name): a lock built per use costs no key work."""
    return _lock_keys(keyspace.prefix, name)


@functools.lru_cache(maxsize=4096)
def _lock_keys(prefix: str, name: str) -> LockKeys:
    lock = Keyspace(prefix).tagged("lock", name)
    return LockKeys(lock, lock + ":fence", lock + ":signal", lock + ":released", lock + ":waiters")


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


def _script(name: str, keys: tuple[str | bytes, ...], args: tuple[Any, ...]) -> Script:
    """A ``Script`` op for keys already checked to share a slot (``lock_keys`` does it by
    construction), built without ``Script.__post_init__``: the hot path builds two per acquire +
    release, and skips six CRC16s per cycle. ``Script(...)`` is used wherever keys come from
    callers."""
    return trusted_script(_LOADED[name] if name in _LOADED else load(name), keys, args)


_LOADED = {n: load(n) for n in ("lock_try", "lock_acquire", "lock_release_try", "lock_release")}


@dataclass(slots=True)
class Grant:
    """A successful acquire: the fencing token and the monotonic time the request left (a
    value: not frozen only because a frozen ``__init__`` costs on every acquire)."""

    fence: int
    sent_at: float


def _pair(reply: Any) -> tuple[int, int]:
    a, b = reply
    return int(a), int(b)


def _acquire_op(keys: LockKeys, token: str | bytes, ttl_ms: int, nonce: str, waiting: bool) -> Script:
    margin = WAITERS_MARGIN_MS if waiting else 0
    return _script("lock_acquire", keys.for_acquire, (token, ttl_ms, nonce, margin))


def try_acquire(keys: LockKeys, token: str | bytes, ttl_ms: int, nonce: str = "") -> Flow[tuple[int, int]]:
    """One attempt that will not wait: ``(fence, 0)`` when taken, ``(0, holder_pttl_ms)`` when
    held or reserved (it does not mark itself as a waiter)."""
    if not nonce:
        return _tried((yield _try_op(keys, token, ttl_ms)))
    return _pair((yield _acquire_op(keys, token, ttl_ms, nonce, False)))


def _tried(reply: Any) -> tuple[int, int]:
    """``lock_try``'s one integer as ``(fence, 0)`` / ``(0, holder_pttl_ms)``."""
    n = int(reply)
    return (n, 0) if n > 0 else (0, -1 - n)


_MS_ARGS: dict[int, bytes] = {}


def ms_arg(ms: int) -> bytes:
    """``ms`` as the bytes redis-py would send (memoised: a lock sends the same lease each time)."""
    arg = _MS_ARGS.get(ms)
    if arg is None:
        if len(_MS_ARGS) >= 1024:
            _MS_ARGS.clear()
        arg = _MS_ARGS[ms] = b"%d" % ms
    return arg


def _try_op(keys: LockKeys, token: str | bytes, ttl_ms: int) -> Script:
    """The uncontended attempt: two keys and two arguments, the shape of SET NX PX + INCR;
    one integer back (the fence, or ``-1 - pttl`` when refused). Built in place (as
    :func:`_script` does, without its lookups): one of the two ops of every acquire + release."""
    arg = _MS_ARGS.get(ttl_ms)
    return trusted_script(_TRY, keys.for_try, (token, arg if arg is not None else ms_arg(ttl_ms)))


def _release_try_op(keys: LockKeys, token: str | bytes) -> Script:
    """The uncontended release: three keys and the token (the other op of every cycle)."""
    return trusted_script(_RELEASE_TRY, keys.for_release_try, (token,))


_TRY = _LOADED["lock_try"]
_RELEASE_TRY = _LOADED["lock_release_try"]


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


def wait_loop(
    attempt: Callable[[str], Script],
    signal: str,
    wait_ms: int,
    *,
    start: float,
    timeout: float | None,
    timed_out: Callable[[], BaseException],
    rand: Callable[[], float] = random.random,
) -> Flow[tuple[int, float]]:
    """The wait of a lock and of a semaphore, after a refused first attempt: block on
    ``signal``, try again, until an attempt wins or ``timeout`` (from ``start``) has passed.

    ``wait_ms`` (the refusal's answer: the holder's remaining lease) bounds each block.
    ``attempt(nonce)`` is the acquire script marking "someone waits" (``nonce``: the hand-over
    popped from the signal list, ``""`` if none); its reply is ``(got, wait_ms)``. Returns
    ``(got, sent_at)``: the winner's answer and the monotonic time its attempt left. Raises
    ``timed_out()``. The first attempt is the caller's own, so the uncontended path builds no
    closure and passes through no second generator.
    """
    deadline = None if timeout is None else start + timeout
    while True:
        now: float = yield Now()
        remaining = None if deadline is None else deadline - now
        if remaining is not None and remaining <= 0:
            raise timed_out()
        nonce = _nonce((yield BlockingPop(signal, wait_bound(wait_ms, remaining, rand()))))
        sent_at: float = yield Now()
        got, wait_ms = _pair((yield attempt(nonce)))
        if got:
            return got, sent_at


def acquire(
    keys: LockKeys,
    token: str | bytes,
    ttl_ms: int,
    *,
    name: str,
    blocking: bool = True,
    timeout: float | None = None,
    rand: Callable[[], float] = random.random,
    started_at: float | None = None,
) -> Flow[Grant | None]:
    """Acquire, waiting (without polling) when ``blocking``; ``None`` when non-blocking fails.

    Waiting blocks on the signal list (:class:`~._core.ops.BlockingPop`) for at most the
    holder's remaining lease; a release hands the lock over with a nonce the waiter presents
    (:func:`wait_loop`). A blocking acquire that runs out of ``timeout`` raises ``LockTimeout``.
    ``started_at``: the monotonic time of the call when the caller already read it (saves an op
    on the uncontended path); the lease deadline counts from the attempt that succeeded.
    """
    start: float = (yield Now()) if started_at is None else started_at
    got = int((yield _try_op(keys, token, ttl_ms)))
    if got > 0:
        return Grant(got, start)
    wait_ms = -1 - got
    if not blocking:
        return None
    if timeout != 0:  # refused: try again as a waiter, so the holder's release hands over to us
        fence, wait_ms = _pair((yield _acquire_op(keys, token, ttl_ms, "", True)))
        if fence:
            return Grant(fence, start)

    def attempt(nonce: str) -> Script:
        return _acquire_op(keys, token, ttl_ms, nonce, True)

    def timed_out() -> LockTimeout:
        msg = f"lock {name!r} is held by another owner; gave up after {timeout} s"
        return LockTimeout(msg, name=name, timeout=timeout)

    won = yield from wait_loop(
        attempt, keys.signal, wait_ms, start=start, timeout=timeout, timed_out=timed_out, rand=rand
    )
    return Grant(*won)


def release(keys: LockKeys, token: str | bytes, ttl_ms: int, *, name: str) -> Flow[bool]:
    """Compare-and-delete. True when released now, False when a retry found it already released.

    Raises ``LockNotOwned`` when another owner holds the lock, or when our lease had expired.
    """
    code = int((yield _release_try_op(keys, token)))
    if code == 1:
        return True
    if code == 3:  # waiters are marked: hand the lock over to the longest-blocked one
        args = (token, max(ttl_ms, 1000), handoff_ms(ttl_ms))
        code = int((yield _script("lock_release", keys.for_release, args)))
    if code == 1:
        return True
    if code == 2:
        return False
    if code < 0:
        raise LockNotOwned(f"lock {name!r} is held by another owner: our lease had expired", name=name)
    raise LockNotOwned(f"lock {name!r} was not held: our lease had expired before the release", name=name)


def extend(keys: LockKeys, token: str | bytes, ttl_ms: int, *, name: str) -> Flow[float]:
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


@dataclass(slots=True)
class Lease:
    """The local view of one held lease: its length, monotonic deadline, loss and release.

    Changed only after a reply (a grant, a renewal, a release); read with the runner's clock.
    """

    ttl: float
    ttl_ms: int
    deadline: float
    lost: BaseException | None = None
    released: bool = False

    @classmethod
    def granted(cls, ttl: float, ttl_ms: int, sent_at: float) -> Lease:
        return cls(ttl, ttl_ms, sent_at + (ttl_ms - int(ttl_ms * DRIFT_FACTOR) - DRIFT_FIXED_MS) / 1000.0)

    def valid_for(self, now: float) -> float:
        """Seconds the lease is surely still ours; 0 once lost or released."""
        if self.lost is not None or self.released:
            return 0.0
        return self.deadline - now

    def renewed(self, sent_at: float, ttl: float) -> None:
        self.ttl, self.ttl_ms = ttl, to_ms(ttl)
        self.deadline = valid_until(sent_at, self.ttl_ms)

    def mark_lost(self, exc: BaseException) -> bool:
        """Record the loss; True the first time (never after a release)."""
        if self.lost is not None or self.released:
            return False
        self.lost = exc
        return True

    def check(self, kind: str, name: str, now: float) -> None:
        """Raise ``LockLost`` unless the lease is still valid at ``now``."""
        if self.released:
            raise LockLost(f"{kind} {name!r} was released by this holder", name=name)
        if self.lost is not None:
            raise LockLost(f"{kind} {name!r} was lost: {self.lost}", name=name) from self.lost
        if self.deadline - now <= 0:
            raise LockLost(f"{kind} {name!r}: the lease ran out", name=name)


def lost_in_block(kind: str, name: str, exc: BaseException, lease: Lease | None = None) -> LockLost:
    """The error of a ``with`` block whose lease was gone when the block ended (both flavours);
    logged unless the loss was already recorded (and logged) by auto-renewal."""
    if lease is None or lease.mark_lost(exc):
        log.warning("%s %r lost before its block ended: %s", kind, name, exc)
    return LockLost(f"{kind} {name!r} was lost before the block ended: {exc}", name=name)


def renewal(
    keys: LockKeys,
    token: str | bytes,
    lease: Lease,
    *,
    name: str,
    on_lost: Callable[..., Any] | None = None,
    holder: Callable[[], object] | None = None,
    rand: Callable[[], float] = random.random,
) -> Flow[str | None]:
    """Auto-renewal, as a background loop: extend at about ttl/3; after a transient error retry
    soon while the lease is still valid; on loss record it and call ``on_lost(holder())``.

    ``holder`` is a weak reference to the handle: once the handle has been collected without a
    release, renewal stops with a ``ResourceWarning`` and the lock expires within its TTL (a
    dropped handle is never renewed forever). Returns a message once the lease is lost, ``None``
    when abandoned; otherwise the loop runs until its driver stops it, which a release does. The
    driver drops the reply of a renewal that raced a release, so a release is never a loss.
    """
    delay = renew_delay(lease.ttl, rand())
    attempt = 0
    while True:
        yield Sleep(delay)
        if holder is not None and holder() is None:
            warnings.warn(
                f"lock {name!r}: its auto-renewed handle was dropped without release(); renewal "
                "stopped and the lock expires within its TTL (release it, or use `with`)",
                ResourceWarning,
                stacklevel=1,
            )
            return None
        try:
            sent_at = yield from extend(keys, token, lease.ttl_ms, name=name)
        except LockNotOwned as exc:
            return (yield from _lose(lease, exc, name, on_lost, holder))
        except Exception as exc:  # transient: retry while the lease is still valid
            now: float = yield Now()
            retry = renew_retry_delay(lease.valid_for(now), attempt, rand())
            attempt += 1
            if retry is None:
                return (yield from _lose(lease, exc, name, on_lost, holder))
            delay = retry
            continue
        lease.renewed(sent_at, lease.ttl)
        attempt = 0
        delay = renew_delay(lease.ttl, rand())


def _lose(
    lease: Lease,
    exc: BaseException,
    name: str,
    on_lost: Callable[..., Any] | None,
    holder: Callable[[], object] | None,
) -> Flow[str | None]:
    if not lease.mark_lost(exc):
        return None
    log.warning("lock %r lost: auto-renewal found %s", name, exc)
    if on_lost is not None:
        yield Compute(on_lost, (holder() if holder is not None else None,))
    return f"lock {name!r} lost"
