"""Streams with consumer groups: idempotent and delayed adds, a worker that never strands or
loops on a message.

>>> import redispatterns as rp
>>> orders = rp.Stream("orders", maxlen=100_000)
>>> orders.add({"sku": "A-1", "qty": 2}, idempotency_key="order-17")      # doctest: +SKIP
>>> orders.add({"remind": 17}, delay=3600)                               # doctest: +SKIP
>>> worker = rp.Consumer(orders, "billing", "billing-1", concurrency=8, order_by="customer",
...                      retry_delay=rp.Backoff.exponential(1, 30))        # doctest: +SKIP
>>> worker.run(handle)                    # until worker.stop()                # doctest: +SKIP

The logic lives once in :mod:`redispatterns._core.streams` (producer side) and
:mod:`redispatterns._core.stream_consumer` (the worker loop); these classes are thin shells over
``run_sync`` / ``run_async`` (shared argument checks in ``_streams_base``). ``AsyncStream`` /
``AsyncConsumer`` have the same methods. Failures are logged on the ``redispatterns.streams``
logger (never configured by the library).

Blocking reads and the socket timeout: redis-py 8 closes a connection whose reply takes longer than
its ``socket_timeout`` (5 s by default), which breaks ``XREADGROUP BLOCK`` beyond that. A consumer
reads the timeout from its client and never blocks longer than it minus a margin in one call: a
longer ``block`` is served as several shorter blocking reads, so no dedicated connection pool is
needed and any client (standalone, Sentinel, Cluster) works as it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from ._core import streams as core
from ._core import validate
from ._core.stream_consumer import Backoff, BaseMessage, ConsumerStats
from ._core.streams import DeadLetter, StreamStats
from ._runner import run_async, run_sync
from ._streams_base import _ConsumerBase, _StreamBase
from .errors import StreamError

__all__ = [
    "AsyncConsumer",
    "AsyncStream",
    "AsyncStreamMessage",
    "Backoff",
    "Consumer",
    "ConsumerStats",
    "DeadLetter",
    "Stream",
    "StreamError",
    "StreamMessage",
    "StreamStats",
]

When = float | dt.datetime


class StreamMessage(BaseMessage):
    """An entry delivered to a :class:`Consumer`: ``id``, ``fields``, ``delivery_count``, ``ack()``."""

    __slots__ = ()

    def ack(self) -> int:
        """Acknowledge now (one round trip). Inside ``run`` a handler that returns is acked for you."""
        return cast(int, self._owner.ack(self))

    def nack(self, delay: float | None = None) -> int:
        """Give the entry back: another delivery after ``delay`` s (default: the consumer's
        ``retry_delay`` policy for this delivery), by any consumer's reclaim."""
        return cast(int, self._owner.nack(self, delay=delay))


class AsyncStreamMessage(BaseMessage):
    """The :class:`AsyncConsumer` twin of :class:`StreamMessage` (``await msg.ack()``)."""

    __slots__ = ()

    def ack(self) -> Awaitable[int]:
        return cast(Awaitable[int], self._owner.ack(self))

    def nack(self, delay: float | None = None) -> Awaitable[int]:
        return cast(Awaitable[int], self._owner.nack(self, delay=delay))


# --------------------------------------------------------------------------- streams


class Stream(_StreamBase):
    """A stream under a mount: ``Stream(name, maxlen=... | minid=... | max_age=..., approximate=True)``.

    Trimming (``maxlen``/``minid``/``max_age``) counts entries, not their delivery state: an entry
    can be trimmed before a group read it or while it is pending when producers outrun consumers
    by more than the cap. Consumers count such entries (``stats.gone``) and drop them from the
    pending list. Idempotency markers live ``idempotency_ttl`` s (default: the mount's TTL, else 24 h).
    """

    def add(
        self,
        fields: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        delay: float | None = None,
        not_before: When | None = None,
    ) -> str:
        """Append an entry; with ``idempotency_key`` a repeat (a retry after a lost reply, a
        concurrent duplicate) returns the first id and adds nothing.

        ``delay`` (seconds) or ``not_before`` (an aware datetime or epoch seconds): the entry waits
        in the delayed set and a consumer's read moves it into the stream once the server clock
        reaches its time (never earlier); the id returned is then ``delayed-<n>``."""
        return run_sync(self._ns.client, self._add(fields, idempotency_key, delay, not_before))

    def add_many(self, entries: Sequence[Mapping[str, Any]]) -> list[str]:
        """Append several entries in one round trip; their ids in order."""
        return run_sync(self._ns.client, self._add_many(entries))

    def length(self) -> int:
        return run_sync(self._ns.client, core.length(self.spec))

    def metrics(self, group: str) -> StreamStats:
        """Length, group lag, pending count, oldest pending age, dead letters (one round trip)."""
        return run_sync(self._ns.client, self._metrics(group))

    def dead_letters(self, count: int = 100, start: str = "-") -> list[DeadLetter]:
        """Entries moved to the dead-letter stream, oldest first."""
        return run_sync(self._ns.client, self._dead_letters(count, start))

    def delete(self) -> int:
        """Delete the stream, its dead-letter stream and its delayed entries (groups go with them)."""
        return run_sync(self._ns.client, self._delete())

    def trim_acked(self, *, approximate: bool = True) -> int:
        """Remove the entries every group has read and acked; pending or unread ones stay."""
        return run_sync(self._ns.client, self._trim_acked(approximate))

    def consumer(self, group: str, name: str | None = None, **options: Any) -> Consumer:
        return Consumer(self, group, name, **options)


class AsyncStream(_StreamBase):
    """The asyncio twin of :class:`Stream`."""

    _asyncio = True

    async def add(
        self,
        fields: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        delay: float | None = None,
        not_before: When | None = None,
    ) -> str:
        return await run_async(self._ns.client, self._add(fields, idempotency_key, delay, not_before))

    async def add_many(self, entries: Sequence[Mapping[str, Any]]) -> list[str]:
        return await run_async(self._ns.client, self._add_many(entries))

    async def length(self) -> int:
        return await run_async(self._ns.client, core.length(self.spec))

    async def metrics(self, group: str) -> StreamStats:
        return await run_async(self._ns.client, self._metrics(group))

    async def dead_letters(self, count: int = 100, start: str = "-") -> list[DeadLetter]:
        return await run_async(self._ns.client, self._dead_letters(count, start))

    async def delete(self) -> int:
        return await run_async(self._ns.client, self._delete())

    async def trim_acked(self, *, approximate: bool = True) -> int:
        return await run_async(self._ns.client, self._trim_acked(approximate))

    def consumer(self, group: str, name: str | None = None, **options: Any) -> AsyncConsumer:
        return AsyncConsumer(self, group, name, **options)


# --------------------------------------------------------------------------- consumers


class Consumer(_ConsumerBase):
    """A member of a consumer group: ``Consumer(stream, group, name, ...)``.

    ``count`` entries per read, ``block`` s per wait; entries pending longer than ``min_idle`` s in a
    dead consumer's list are reclaimed every ``reclaim_interval`` s (on a timer, traffic or not);
    a handler failing on delivery ``max_deliveries`` sends the entry to the dead-letter stream
    (``0``: never), an earlier failure retries it after ``retry_delay`` (seconds, or a
    :class:`Backoff`: fixed or exponential with jitter, at most ``min_idle``). ``concurrency``:
    handler calls at a time (worker threads); ``order_by`` (a field name or a function of the
    message): entries with the same key are handled one at a time, in stream order. ``on_error``
    is called with ``(exception, message)`` after each handler failure (which is also logged on
    ``redispatterns.streams`` with the entry id and delivery count). ``start``: where a new group
    begins, ``"0"`` (the whole stream, default) or ``"$"`` (new entries only).
    ``reclaim_batch``: entries coming back from a dead consumer (or from this one's previous life)
    are taken this many at a time; each take counts a delivery for all it takes, so the default 1
    charges a message that crashes its process to that message alone, not to its batch mates.
    Delayed entries that are due are moved into the stream by the reads (checked at least every
    second, or ``reclaim_interval`` when shorter).
    """

    _stream_cls = Stream
    _message_cls = StreamMessage

    @property
    def stream(self) -> Stream:
        return cast(Stream, self._stream)

    def ensure_group(self) -> bool:
        """Create the group if needed (idempotent); True when this call created it."""
        return run_sync(self._client, self._ensure())

    def read(self, count: int | None = None, block: float | None = None) -> list[StreamMessage]:
        """The next batch: own pending first, then reclaimed, then new entries (waits ``block`` s)."""
        return self._wrap(run_sync(self._client, self._read(count, block)))

    def reclaim(self) -> list[StreamMessage]:
        """Claim entries idle longer than ``min_idle`` now (``read``/``run`` also do it on a timer)."""
        return self._wrap(run_sync(self._client, self._reclaim()))

    def ack(self, *messages: StreamMessage | str) -> int:
        return run_sync(self._client, self._ack(messages))

    def nack(self, *messages: StreamMessage | str, delay: float | None = None) -> int:
        """Give entries back for another delivery after ``delay`` s (default: the ``retry_delay``
        policy for each one's delivery count); counts no delivery."""
        return run_sync(self._client, self._nack(messages, delay))

    def dead_letter(
        self, message: StreamMessage | str, error: str = "dead-lettered by the application"
    ) -> bool:
        """Move one pending entry to the dead-letter stream and ack it, atomically."""
        return bool(run_sync(self._client, self._dead(message, error)))

    def metrics(self) -> StreamStats:
        return self.stream.metrics(self.group)

    def prune_consumers(self, idle: float = 3600.0) -> list[str]:
        """Delete this group's consumers that hold no pending entry and were idle ``idle`` s
        (dead processes' names); checked and deleted atomically, so no entry is lost."""
        return run_sync(self._client, self._prune(idle))

    def run(
        self,
        handler: Callable[[StreamMessage], Any],
        *,
        until_idle: float | None = None,
        max_messages: int | None = None,
    ) -> ConsumerStats:
        """Handle entries until :meth:`stop` (or ``until_idle`` s without entries, or ``max_messages``).

        A handler that returns acks the entry (acks ride with the next read); one that raises
        retries it, up to ``max_deliveries``, then dead-letters it with the error.
        """
        if not callable(handler) or validate.is_async_callable(handler):
            raise TypeError("run() takes a plain function; use AsyncConsumer for async handlers")
        return run_sync(self._client, self._run(handler, until_idle, max_messages))


class AsyncConsumer(_ConsumerBase):
    """The asyncio twin of :class:`Consumer`; handlers may be ``async def`` or plain functions
    (``concurrency`` runs async handlers as that many tasks; a plain function runs on the loop)."""

    _asyncio = True
    _stream_cls = AsyncStream
    _message_cls = AsyncStreamMessage

    @property
    def stream(self) -> AsyncStream:
        return cast(AsyncStream, self._stream)

    async def ensure_group(self) -> bool:
        return await run_async(self._client, self._ensure())

    async def read(self, count: int | None = None, block: float | None = None) -> list[AsyncStreamMessage]:
        return self._wrap(await run_async(self._client, self._read(count, block)))

    async def reclaim(self) -> list[AsyncStreamMessage]:
        return self._wrap(await run_async(self._client, self._reclaim()))

    async def ack(self, *messages: AsyncStreamMessage | str) -> int:
        return await run_async(self._client, self._ack(messages))

    async def nack(self, *messages: AsyncStreamMessage | str, delay: float | None = None) -> int:
        return await run_async(self._client, self._nack(messages, delay))

    async def dead_letter(
        self, message: AsyncStreamMessage | str, error: str = "dead-lettered by the application"
    ) -> bool:
        return bool(await run_async(self._client, self._dead(message, error)))

    async def metrics(self) -> StreamStats:
        return await self.stream.metrics(self.group)

    async def prune_consumers(self, idle: float = 3600.0) -> list[str]:
        return await run_async(self._client, self._prune(idle))

    async def run(
        self,
        handler: Callable[[AsyncStreamMessage], Any],
        *,
        until_idle: float | None = None,
        max_messages: int | None = None,
    ) -> ConsumerStats:
        if not callable(handler):
            raise TypeError("run() takes a function or an async function of one message")
        return await run_async(self._client, self._run(handler, until_idle, max_messages))
