"""Connection pools that wait for a free connection instead of raising, at no cost when one is free.

redis-py's ``BlockingConnectionPool`` pays for its waiting on every command (asyncio: a
condition, a timeout handle and a second lock per checkout, ~1.15x a plain client on one GET).
These pools take the plain ``ConnectionPool`` path while a connection is free or may be made,
and only a caller that finds every connection busy waits, first come first served, for at most
``timeout`` seconds (then ``ConnectionError("No connection available.")``, as redis-py's
blocking pools say). Used by ``connect()`` / ``connect_async()``.

Their connections pack commands with hiredis directly (:func:`._compat.pack_directly`), and the
runners send a script or a reply-as-is command on them without redis-py's per-command wrapper
(see ``_runner._direct_sync``). An asyncio connection that fails drops what it has not sent
(:func:`._compat.aborting`): a write that timed out half-sent is never applied later.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from ._compat import aborting, pack_directly

__all__ = ["DIRECT", "AsyncQueuingPool", "QueuingPool", "mark_direct"]

# The attribute under which a standalone (or Sentinel master) client of ``connect()`` /
# ``connect_async()`` keeps its pool (one of these, or redis-py's Sentinel pool): the runners send
# a script, or a command whose reply redis-py passes on as it is, straight on the pool's
# connections (``_runner._direct_sync``).
DIRECT = "_redispatterns_pool"

_NONE_FREE = "No connection available."
_sync_get = redis.ConnectionPool.get_connection  # called directly: the hot path skips super()
_sync_release = redis.ConnectionPool.release


class QueuingPool(redis.ConnectionPool):
    """A sync pool of ``max_connections`` that makes a caller wait (up to ``timeout`` s) when full."""

    def __init__(self, *args: Any, timeout: float | None = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._free = threading.Condition(threading.Lock())
        self._waiting = 0

    def make_connection(self) -> Any:
        return pack_directly(super().make_connection())

    def _may_get(self) -> bool:
        return bool(self._available_connections) or self._created_connections < self.max_connections

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return _sync_get(self)
        except MaxConnectionsError:
            pass
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            with self._free:
                self._waiting += 1
                try:
                    while not self._may_get():
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise RedisConnectionError(_NONE_FREE)
                        self._free.wait(left)
                finally:
                    self._waiting -= 1
            try:
                return _sync_get(self)
            except MaxConnectionsError:  # another thread was faster: wait again
                continue

    def release(self, connection: Any) -> None:
        _sync_release(self, connection)
        if self._waiting:
            with self._free:
                self._free.notify()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(RedisConnectionError(_NONE_FREE))


def _woken(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


class AsyncQueuingPool(redis.asyncio.ConnectionPool):
    """The asyncio twin of :class:`QueuingPool`: waiters are futures served in arrival order, and
    a release wakes one only while there are more free slots than waiters already woken (no
    herd, no waiter losing its turn)."""

    def __init__(self, *args: Any, timeout: float | None = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = aborting(self.connection_class)
        self.timeout = timeout
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._woken = 0  # waiters woken that have not taken their connection yet

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._waiters and self.can_get_connection():
            try:
                return await super().get_connection()  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                pass
        return await self._wait()

    def make_connection(self) -> Any:
        return pack_directly(super().make_connection())  # type: ignore[no-untyped-call]

    def _free(self) -> int:
        return self.max_connections - len(self._in_use_connections)

    def _wake_next(self) -> None:
        """Wake the first waiter not woken yet, while free slots outnumber the woken."""
        if self._free() <= self._woken:
            return
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
                self._woken += 1
                return

    async def _wait(self) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        front = False
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            if front:  # woken but beaten to the slot: keep our turn
                self._waiters.appendleft(fut)
            else:
                self._waiters.append(fut)
            served = False
            timer = None
            try:
                self._wake_next()
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise RedisConnectionError(_NONE_FREE)
                if left is not None:
                    timer = loop.call_later(left, _expire, fut)
                await fut  # a plain await: a cancellation after the wake-up is never swallowed
                served = True
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiters.remove(fut)
                if not served and _woken(fut):
                    self._woken -= 1  # woken, but leaving (cancelled): pass the turn on
                    self._wake_next()
            try:
                conn = await super().get_connection()  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                front = True
                continue
            finally:
                self._woken -= 1
                self._wake_next()
            return conn

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if self._waiters:
                self._wake_next()


def mark_direct(client: Any, pool: Any) -> Any:
    """Let the runners use ``pool``'s connections directly for ``client`` (see :data:`DIRECT`)."""
    setattr(client, DIRECT, pool)
    return client
