"""A counting semaphore as flows: at most ``limit`` leases, each expiring (crash-safe).

Leases live in one sorted set scored by expiry on the server's clock (``semaphore_*.lua``); a
waiter blocks on the signal list exactly as a lock waiter does (:func:`~._core.lock.wait_loop`).
Keys (one hash tag): ``<prefix>semaphore:{<name>}`` (leases), ``:signal``, ``:waiters``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LockNotOwned, LockTimeout
from . import validate
from .keys import Keyspace
from .lock import HANDOFF_MS, WAITERS_MARGIN_MS, _pair, _script, wait_loop
from .ops import Command, Flow, Now, Script
from .scripts import load

__all__ = [
    "SemaphoreKeys",
    "check_limit",
    "semaphore_acquire",
    "semaphore_count",
    "semaphore_extend",
    "semaphore_keys",
    "semaphore_release",
]


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
    rand: Callable[[], float] = random.random,
    started_at: float | None = None,
) -> Flow[float | None]:
    """Take one of ``limit`` leases; the send time of the winning attempt, or None (non-blocking).

    A full semaphore answers how long until its earliest lease expires; the waiter blocks on the
    signal list (a release pushes one entry when someone waits) for at most that long: the wait
    loop of the lock (:func:`~._core.lock.wait_loop`).
    """

    start: float = (yield Now()) if started_at is None else started_at
    margin = WAITERS_MARGIN_MS if blocking and timeout != 0 else 0
    ok, wait_ms = _pair((yield _attempt(keys, token, ttl_ms, limit, margin)))
    if ok:
        return start
    if not blocking:
        return None

    def attempt(nonce: str) -> Script:
        return _attempt(keys, token, ttl_ms, limit, WAITERS_MARGIN_MS)

    def timed_out() -> LockTimeout:
        msg = f"semaphore {name!r}: all {limit} leases are taken; gave up after {timeout} s"
        return LockTimeout(msg, name=name, timeout=timeout)

    _, sent_at = yield from wait_loop(
        attempt, keys.signal, wait_ms, start=start, timeout=timeout, timed_out=timed_out, rand=rand
    )
    return sent_at


def _attempt(keys: SemaphoreKeys, token: str, ttl_ms: int, limit: int, margin: int) -> Script:
    return _script("semaphore_acquire", (keys.leases, keys.waiters), (token, ttl_ms, limit, margin))


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
