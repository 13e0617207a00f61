"""Summary workers for ``SessionStore(summarizer=...)``: a bounded queue and N workers.

The job itself is a core flow (:func:`redispatterns._core.session_tracks.summarize`); this module
is the minimal background runtime around it, one class per flavour (threads for the sync store,
tasks for the asyncio store). It lives here until the runner grows background loops of its own.

Rules: a job is enqueued with ``put_nowait``, so a full queue never blocks the append that asked
for it (the job is dropped, counted and logged: the 1st, 2nd, 4th, 8th ... time, so a flood of
drops does not cost a log line each); the summarizer runs under ``timeout`` (a sync
summarizer in a daemon thread the worker stops waiting for; an async one is cancelled), and a
timeout or an error is counted and logged, never raised into a request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ._core import session_tracks as core
from ._core.session import SessionConfig
from ._runner import run_async, run_sync

__all__ = ["AsyncSummaryWorkers", "SummaryStats", "SummaryWorkers"]

log = logging.getLogger("redispatterns.session")

# one class in Python 3.11+, three before
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, FutureTimeout)


@dataclass
class SummaryStats:
    """Counters of the summary workers (since the store was built)."""

    enqueued: int = 0
    completed: int = 0
    skipped: int = 0  # the session (or its events) was gone
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0  # the queue was full


class _Workers:
    """What both flavours share: configuration, counters and the outcome bookkeeping."""

    def __init__(
        self,
        client: Callable[[], Any],
        cfg: SessionConfig,
        summarizer: Callable[..., Any],
        workers: int,
        capacity: int,
        timeout: float,
    ) -> None:
        self._client, self._cfg, self._summarizer = client, cfg, summarizer
        self._n, self._capacity, self._timeout = workers, capacity, timeout
        self.stats = SummaryStats()
        self._lock = threading.Lock()

    def _count(self, name: str) -> int:
        with self._lock:
            n: int = getattr(self.stats, name) + 1
            setattr(self.stats, name, n)
            return n

    def _dropped(self, filter_key: str) -> bool:
        n = self._count("dropped")
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ... drop: a flood must not cost a log line each
            log.warning(
                "session summary queue is full (%d jobs): summary %r dropped (%d dropped so far)",
                self._capacity, filter_key, n,
            )  # fmt: skip
        return False

    def _outcome(self, filter_key: str, stored: bool | None, exc: BaseException | None) -> None:
        if isinstance(exc, _TIMEOUTS):
            n = self._count("timed_out")
            if n & (n - 1) == 0:
                log.warning(
                    "session summary %r timed out after %ss (%d so far)", filter_key, self._timeout, n
                )
        elif exc is not None:
            self._count("failed")
            log.error("session summary %r failed", filter_key, exc_info=exc)
        else:
            self._count("completed" if stored else "skipped")


class SummaryWorkers(_Workers):
    """Worker threads draining a ``queue.Queue``; each summarizer call runs in a daemon thread
    the worker stops waiting for at the timeout (a stuck call never holds up interpreter exit).
    At most ``2 * workers`` calls run at once, abandoned ones included."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if inspect.iscoroutinefunction(self._summarizer):
            raise TypeError("an async summarizer needs AsyncSessionStore; pass a plain function here")
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(self._capacity)
        self._threads: list[threading.Thread] = []
        self._calls = threading.BoundedSemaphore(2 * self._n)
        self._start_lock = threading.Lock()

    def submit(self, token: str, filter_key: str) -> bool:
        """Enqueue a job without waiting: False (counted, logged) when the queue is full."""
        self._start()
        try:
            self._queue.put_nowait((token, filter_key))
        except queue.Full:
            return self._dropped(filter_key)
        self._count("enqueued")
        return True

    def _start(self) -> None:
        if self._threads:
            return
        with self._start_lock:
            if self._threads:
                return
            for i in range(self._n):
                t = threading.Thread(target=self._work, name=f"rp-session-summary-{i}", daemon=True)
                self._threads.append(t)
                t.start()

    def _call(self, evs: list[Any], filter_key: str) -> Any:
        deadline = time.monotonic() + self._timeout
        if not self._calls.acquire(timeout=self._timeout):  # every slot held by stuck calls
            raise FutureTimeout(f"no summarizer slot free within {self._timeout}s")
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self._summarizer(evs, filter_key)
            except BaseException as exc:  # handed to the worker below
                box["error"] = exc
            finally:
                self._calls.release()

        t = threading.Thread(target=target, name="rp-session-summarizer", daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise FutureTimeout(f"summarizer ran past {self._timeout}s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            token, filter_key = job
            try:
                stored = run_sync(self._client(), core.summarize(self._cfg, token, filter_key, self._call))
            except Exception as exc:
                self._outcome(filter_key, None, exc)
            else:
                self._outcome(filter_key, stored, None)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued job has finished (or timed out)."""
        if self._threads:
            self._queue.join()

    def close(self) -> None:
        """Finish the queued jobs, then stop the workers."""
        self.flush()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._threads = []


class AsyncSummaryWorkers(_Workers):
    """Worker tasks draining an ``asyncio.Queue`` (started on the first job, in its loop)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._queue: asyncio.Queue[tuple[str, str] | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, token: str, filter_key: str) -> bool:
        if self._queue is None:
            self._queue = asyncio.Queue(self._capacity)
            self._tasks = [asyncio.create_task(self._work(self._queue)) for _ in range(self._n)]
        try:
            self._queue.put_nowait((token, filter_key))
        except asyncio.QueueFull:
            return self._dropped(filter_key)
        self._count("enqueued")
        return True

    async def _call(self, evs: list[Any], filter_key: str) -> Any:
        if inspect.iscoroutinefunction(self._summarizer):
            return await asyncio.wait_for(self._summarizer(evs, filter_key), self._timeout)
        return await asyncio.wait_for(asyncio.to_thread(self._summarizer, evs, filter_key), self._timeout)

    async def _work(self, q: asyncio.Queue[tuple[str, str] | None]) -> None:
        while (job := await q.get()) is not None:
            token, filter_key = job
            try:
                stored = await run_async(
                    self._client(), core.summarize(self._cfg, token, filter_key, self._call)
                )
            except Exception as exc:
                self._outcome(filter_key, None, exc)
            else:
                self._outcome(filter_key, stored, None)
            finally:
                q.task_done()
        q.task_done()

    async def flush(self) -> None:
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._queue is not None:
            for _ in self._tasks:
                await self._queue.put(None)
            await asyncio.gather(*self._tasks)
        self._queue, self._tasks = None, []
