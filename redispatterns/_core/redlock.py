"""Redlock as flows: quorum and validity math, the retried round, release and extend.

One round is a :class:`~._core.ops.FanOut` over the independent masters (the runner runs the
node flows in parallel, each bounded by the per-node timeout); this module only counts votes.
Validity is ``ttl - elapsed - drift`` (the reference algorithm's ``ttl·1% + 2 ms`` drift).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..errors import LockNotOwned, LockTimeout
from .lock import drift_ms
from .ops import Command, FanOut, Flow, Now, Script, Sleep
from .scripts import load

__all__ = [
    "Masters",
    "RedlockVote",
    "node_acquire",
    "node_extend",
    "node_release",
    "quorum",
    "redlock_acquire",
    "redlock_extend",
    "redlock_release",
    "redlock_retry_delay",
    "redlock_validity_ms",
]


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


@dataclass(frozen=True, slots=True)
class Masters:
    """The independent masters of one Redlock, its key, and the per-node time budget."""

    clients: tuple[Any, ...]
    key: str
    node_timeout: float

    def fan_out(self, make: Callable[[], Flow[bool]]) -> FanOut:
        return FanOut(self.clients, make, self.node_timeout)


def redlock_acquire(
    masters: Masters,
    token: str,
    ttl_ms: int,
    *,
    name: str,
    retries: int,
    retry_delay: float,
    timeout: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Flow[RedlockVote]:
    """The Redlock round, retried: a :class:`~._core.ops.FanOut` of SET NX PX to every master in
    parallel, each within ``node_timeout``; one result per node (True/False, or an exception).
    On failure every node is released (the SET may have landed on an errored node),
    then a random delay; after ``retries`` more rounds (or ``timeout``) ``LockTimeout``.
    """
    start: float = yield Now()
    attempt = 0
    last: RedlockVote | None = None
    while True:
        t0: float = yield Now()
        results = yield masters.fan_out(partial(node_acquire, masters.key, token, ttl_ms))
        t1: float = yield Now()
        votes = sum(1 for r in results if r is True)
        vote = RedlockVote(votes, len(results), redlock_validity_ms(ttl_ms, t1 - t0), t1 - t0, t1)
        if vote.acquired:
            return vote
        last = vote
        yield masters.fan_out(partial(node_release, masters.key, token))
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


def redlock_release(masters: Masters, token: str) -> Flow[int]:
    """Release on every master; returns how many still held our token."""
    results = yield masters.fan_out(partial(node_release, masters.key, token))
    return sum(1 for r in results if r is True)


def redlock_extend(masters: Masters, token: str, ttl_ms: int, *, name: str) -> Flow[RedlockVote]:
    """Extend on every master; counts only when a majority extended within the new validity."""
    t0: float = yield Now()
    results = yield masters.fan_out(partial(node_extend, masters.key, token, ttl_ms))
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
