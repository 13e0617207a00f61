"""Write-behind policy, pure: which worker takes a write, and how the queues are sized.

The session store's optional asynchronous persistence sends event appends and state patches to
``workers`` bounded queues. A write goes to the queue chosen by :func:`shard_of` its ordering key
(the session id, or the state hash), so the writes of one session stay in order while different
sessions proceed in parallel. A full queue makes the caller wait (back-pressure), never drops.
What a crash loses: everything still queued (at most ``workers * capacity`` writes).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TypeVar, cast

from .ops import Flow, Op

__all__ = ["WriteBehind", "prime", "shard_of"]

T = TypeVar("T")


def shard_of(key: str, workers: int) -> int:
    """The worker for ``key``: stable across processes (CRC-32, not Python's salted ``hash``)."""
    if workers <= 0:
        raise ValueError("workers must be positive")
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % workers


@dataclass(frozen=True, slots=True)
class WriteBehind:
    """``workers`` queues of ``capacity`` writes each; ``workers == 0`` means write-through."""

    workers: int = 0
    capacity: int = 1000

    def __post_init__(self) -> None:
        for name in ("workers", "capacity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"write-behind {name} must be an int, not {type(v).__name__}")
        if self.workers < 0:
            raise ValueError(f"write-behind workers must be >= 0, got {self.workers}")
        if self.capacity <= 0:
            raise ValueError(f"write-behind capacity must be positive, got {self.capacity}")

    @property
    def enabled(self) -> bool:
        return self.workers > 0

    def shard(self, key: str) -> int:
        return shard_of(key, self.workers)


def prime(flow: Flow[T]) -> Flow[T] | None:
    """Start ``flow`` now, so its argument checks raise in the caller, not in a worker.

    Returns a flow that continues from the first operation, or ``None`` when the flow finished
    without asking for any (nothing to write).
    """
    try:
        first = next(flow)
    except StopIteration:
        return None
    return _resume(flow, first)


def _resume(flow: Flow[T], first: Op) -> Flow[T]:
    op = first
    while True:
        try:
            reply = yield op
        except Exception as exc:
            try:
                op = flow.throw(exc)
            except StopIteration as stop:
                return cast(T, stop.value)
        else:
            try:
                op = flow.send(reply)
            except StopIteration as stop:
                return cast(T, stop.value)
