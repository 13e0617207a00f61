"""Summary jobs for ``SessionStore(summarizer=...)``: bounded queues drained by the runners.

A job is the core flow :func:`redispatterns._core.session_tracks.summarize` wrapped so that its
outcome is counted; the runner layer's queues (:class:`~redispatterns._runner.SyncQueues` for
the sync store, :class:`~redispatterns._runner.AsyncQueues` for the asyncio one) run it, and the
summarizer call is a ``Compute`` with a timeout. Rules: a job is offered without waiting, so a full
queue never blocks the append that asked for it (the job is dropped, counted and logged: the 1st,
2nd, 4th, 8th ... time, so a flood of drops does not cost a log line each); a timeout or an error
is counted and logged, never raised into a request. Jobs of one session run in order.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._core import session_tracks as core
from ._core import validate
from ._core.ops import Flow
from ._core.session import SessionConfig
from ._runner import AsyncQueues, SyncQueues

__all__ = ["SummaryJobs", "SummaryStats"]

log = logging.getLogger("redispatterns.session")


@dataclass
class SummaryStats:
    """Counters of the summary workers (since the store was built)."""

    enqueued: int = 0
    completed: int = 0
    skipped: int = 0  # the session (or its events) was gone
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0  # the queue was full


class SummaryJobs:
    """``workers`` queues of summary jobs (``capacity`` jobs in all), for one store."""

    def __init__(
        self,
        client: Callable[[], Any],
        cfg: SessionConfig,
        summarizer: Callable[..., Any],
        workers: int,
        capacity: int,
        timeout: float,
        *,
        asyncio_: bool,
    ) -> None:
        if not asyncio_ and validate.is_async_callable(summarizer):
            raise TypeError("an async summarizer needs AsyncSessionStore; pass a plain function here")
        self._cfg, self._summarizer, self._timeout = cfg, summarizer, timeout
        self._n, self._capacity = workers, capacity
        per_queue = -(-capacity // workers)
        queues = AsyncQueues if asyncio_ else SyncQueues
        self.queues: Any = queues(client, workers, per_queue, "rp-session-summary", "session summary")
        self.stats = SummaryStats()
        self._lock = threading.Lock()

    def offer(self, token: str, filter_key: str) -> bool:
        """Queue a job without waiting: False (counted, logged) when its queue is full."""
        shard = zlib.crc32(token.encode()) % self._n
        if not self.queues.offer(shard, self._job(token, filter_key)):
            n = self._count("dropped")
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... drop
                log.warning(
                    "session summary queue is full (%d jobs): summary %r dropped (%d dropped so far)",
                    self._capacity, filter_key, n,
                )  # fmt: skip
            return False
        self._count("enqueued")
        return True

    def _job(self, token: str, filter_key: str) -> Flow[None]:
        try:
            stored = yield from core.summarize(self._cfg, token, filter_key, self._summarizer, self._timeout)
        except TimeoutError:
            n = self._count("timed_out")
            if n & (n - 1) == 0:
                log.warning(
                    "session summary %r timed out after %ss (%d so far)", filter_key, self._timeout, n
                )
        except Exception:
            self._count("failed")
            log.exception("session summary %r failed", filter_key)
        else:
            self._count("completed" if stored else "skipped")

    def _count(self, name: str) -> int:
        with self._lock:
            n: int = getattr(self.stats, name) + 1
            setattr(self.stats, name, n)
            return n
