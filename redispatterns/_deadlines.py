"""Socket timeouts for asyncio connections, kept by one watchdog thread instead of a loop timer.

redis-py enforces ``socket_timeout`` on an asyncio connection by arming a loop timer around each
read (``asyncio.timeout``) and, on Python 3.11, by running each write in a task of its own
(``asyncio.wait_for``). While any timer is pending, every ``epoll_wait`` of the loop arms a kernel
timer as well, and on a virtual machine that costs more than the rest of a small command's client
side (``loadtests/bench_core.py`` shows the difference). :class:`WatchedConnection` keeps the same
timeout, and the same errors, without any loop timer: a read or write registers its deadline in a
dictionary, and a daemon thread that wakes every :data:`TICK` seconds cancels the task of any
operation past its deadline (through ``call_soon_threadsafe``). The cancelled operation
disconnects and raises redis-py's ``TimeoutError``, as a socket timeout does, at most
:data:`TICK` late. A cancellation that also came from elsewhere still propagates (Python 3.11+'s
``Task.uncancel``); on Python 3.10, and for timeouts under :data:`MIN_WATCHED`, redis-py's own
timers are kept.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["MIN_WATCHED", "TICK", "WatchedConnection"]

TICK = 0.02
"""How often the watchdog looks for expired operations (their timeout is late by at most this)."""

MIN_WATCHED = 0.1
"""Timeouts shorter than this keep redis-py's loop timers (a tick would be too coarse for them)."""

_WATCHING = sys.version_info >= (3, 11)  # Task.uncancel tells our cancellation from another


class _Op:
    __slots__ = ("deadline", "fired", "loop", "task")

    def __init__(self, deadline: float, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.deadline = deadline
        self.task = task
        self.loop = loop
        self.fired = False


_ops: dict[Any, _Op] = {}  # connection -> its operation in progress
_started = False
_start_lock = threading.Lock()


def _expire(conn: Any, op: _Op) -> None:
    """In the operation's loop: cancel its task if the operation is still in progress."""
    if _ops.get(conn) is op and not op.fired and not op.task.done():
        op.fired = True
        op.task.cancel()


def _watch() -> None:
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        for conn, op in _ops.copy().items():
            if op.deadline <= now and not op.fired:
                try:
                    op.loop.call_soon_threadsafe(_expire, conn, op)
                except RuntimeError:  # its loop is closed: nothing left to cancel
                    _ops.pop(conn, None)


def _start() -> None:
    global _started
    with _start_lock:
        if not _started:
            threading.Thread(target=_watch, name="redispatterns-deadlines", daemon=True).start()
            _started = True


def _forget_thread() -> None:
    global _started
    _started = False  # a forked child has no watchdog thread: the next operation starts one
    _ops.clear()


os.register_at_fork(after_in_child=_forget_thread)


def _begin(conn: Any, timeout: float) -> _Op | None:
    task = asyncio.current_task()
    if task is None:
        return None
    if not _started:
        _start()
    op = _Op(time.monotonic() + timeout, task, task.get_loop())
    _ops[conn] = op
    return op


def _timed_out(op: _Op) -> bool:
    """Whether a ``CancelledError`` came from the watchdog alone (then it is consumed)."""
    if sys.version_info >= (3, 11):
        return op.fired and op.task.uncancel() == 0
    return False  # never watched there (see _WATCHING)


class WatchedConnection(redis.asyncio.Connection):
    """A TCP connection whose ``socket_timeout`` the watchdog thread enforces (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.io_timeout: float | None = self.socket_timeout
        if _WATCHING and self.io_timeout is not None and self.io_timeout >= MIN_WATCHED:
            self.socket_timeout = None  # redis-py arms no timer; the watchdog keeps io_timeout
        else:
            self.io_timeout = None

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.io_timeout
        op = None if timeout is None else _begin(self, timeout)
        if op is None:
            return await super().send_packed_command(command, check_health)
        try:
            await super().send_packed_command(command, check_health)
        except asyncio.CancelledError:
            if _timed_out(op):
                raise RedisTimeoutError("Timeout writing to socket") from None
            raise
        finally:
            if _ops.get(self) is op:
                del _ops[self]

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        io_timeout = self.io_timeout
        op = None if timeout is not None or io_timeout is None else _begin(self, io_timeout)
        if op is None:  # an explicit timeout (pub/sub reads): redis-py's own handling
            return await super().read_response(
                disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        try:
            return await super().read_response(
                disable_decoding, None, disconnect_on_error=disconnect_on_error, push_request=push_request
            )
        except asyncio.CancelledError:
            if _timed_out(op):
                raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None
            raise
        finally:
            if _ops.get(self) is op:
                del _ops[self]
