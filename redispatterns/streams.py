"""Streams with consumer groups: idempotent add, a worker that never strands or loops on a message.

>>> import redispatterns as rp
>>> orders = rp.Stream("orders", maxlen=100_000)
>>> orders.add({"sku": "A-1", "qty": 2}, idempotency_key="order-17")      # doctest: +SKIP
>>> worker = rp.Consumer(orders, "billing", "billing-1", max_deliveries=5)   # doctest: +SKIP
>>> worker.run(handle)                    # until worker.stop()                # doctest: +SKIP

The logic lives once in :mod:`redispatterns._core.streams`; these classes are thin shells over
``run_sync`` / ``run_async``. ``AsyncStream`` / ``AsyncConsumer`` have the same methods.

Blocking reads and the socket timeout: redis-py 8 closes a connection whose reply takes longer than
its ``socket_timeout`` (5 s by default), which breaks ``XREADGROUP BLOCK`` beyond that. A consumer
reads the timeout from its client and never blocks longer than it minus a margin in one call: a
longer ``block`` is served as several shorter blocking reads, so no dedicated connection pool is
needed and any client (standalone, Sentinel, Cluster) works as it is.
"""

from __future__ import annotations

import inspect
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core import streams as core
from ._core import validate
from ._core.mount import Mount
from ._core.ops import Flow
from ._core.streams import (
    BaseMessage,
    BatchResult,
    ConsumerConfig,
    ConsumerState,
    ConsumerStats,
    DeadLetter,
    Delivery,
    StreamSpec,
    StreamStats,
)
from ._runner import run_async, run_sync, socket_timeout
from .errors import StreamError
from .mount import Namespace, resolve

__all__ = [
    "AsyncConsumer",
    "AsyncStreamMessage",
    "AsyncStream",
    "Consumer",
    "ConsumerStats",
    "DeadLetter",
    "StreamMessage",
    "Stream",
    "StreamError",
    "StreamStats",
]

_TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
_DEFAULT_IDEMPOTENCY_TTL = 86400.0


def _check_name(what: str, value: object) -> str:
    return validate.name(value, what)


def _positive(what: str, value: object, *, allow_zero: bool = False) -> float:
    return validate.seconds(value, what, zero_ok=allow_zero)


def _count(what: str, value: object, *, minimum: int = 1) -> int:
    return validate.count(value, what, minimum=minimum)


def _check_delay(delay: object, min_idle: float, what: str = "delay") -> float:
    d = _positive(what, delay, allow_zero=True)
    if d > min_idle:
        raise ValueError(
            f"{what}={d} exceeds min_idle={min_idle}: a given-back entry is reclaimed once it looks "
            "idle for min_idle, so the delay can be at most min_idle (raise min_idle)"
        )
    return d


def default_consumer_name() -> str:
    """``<host>-<pid>``: distinct per process. Pass a stable name to recover own pending at restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _ids(items: Sequence[BaseMessage | str]) -> list[Any]:
    out: list[Any] = []
    for m in items:
        if isinstance(m, BaseMessage):
            m.settled = True
            out.append(m._id)
        elif isinstance(m, str) and m:
            out.append(m)
        else:
            raise TypeError(f"expected a StreamMessage or an entry id str, not {type(m).__name__}")
    return out


class StreamMessage(BaseMessage):
    """An entry delivered to a :class:`Consumer`: ``id``, ``fields``, ``delivery_count``, ``ack()``."""

    __slots__ = ()

    def ack(self) -> int:
        """Acknowledge now (one round trip). Inside ``run`` a handler that returns is acked for you."""
        return self._owner.ack(self)  # type: ignore[no-any-return]

    def nack(self, delay: float = 0.0) -> int:
        """Give the entry back: another delivery after ``delay`` s (by any consumer's reclaim)."""
        return self._owner.nack(self, delay=delay)  # type: ignore[no-any-return]


class AsyncStreamMessage(BaseMessage):
    """The :class:`AsyncConsumer` twin of :class:`StreamMessage` (``await msg.ack()``)."""

    __slots__ = ()

    def ack(self) -> Awaitable[int]:
        return self._owner.ack(self)  # type: ignore[no-any-return]

    def nack(self, delay: float = 0.0) -> Awaitable[int]:
        return self._owner.nack(self, delay=delay)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- streams


class _StreamBase:
    _asyncio = False

    def __init__(
        self,
        name: str,
        *,
        maxlen: int | None = None,
        minid: str | None = None,
        max_age: float | None = None,
        approximate: bool = True,
        idempotency_ttl: float | None = None,
        mount: Mount | Namespace | None = None,
        client: Any = None,
    ) -> None:
        _check_name("stream name", name)
        trim = core.trim_args(maxlen, minid, bool(approximate))
        max_age_ms = None
        if max_age is not None:
            if trim:
                raise ValueError("pass one of maxlen=, minid= or max_age=")
            max_age_ms = max(1, round(_positive("max_age", max_age) * 1000))
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        self.spec = StreamSpec(name, self._ns.keyspace, trim, max_age_ms)
        ttl = idempotency_ttl if idempotency_ttl is not None else self._ns.ttl or _DEFAULT_IDEMPOTENCY_TTL
        self._idem_ttl_ms = max(1, round(_positive("idempotency_ttl", ttl) * 1000))
        self.codec = self._ns.mount.codec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        """The stream's Redis key."""
        return self.spec.key

    @property
    def dead_letter_key(self) -> str:
        return self.spec.dlq

    @property
    def namespace(self) -> Namespace:
        return self._ns

    def _add(self, fields: Mapping[str, Any], idempotency_key: str | None) -> Flow[str]:
        self._ns.check_write("Stream.add")
        if idempotency_key is not None:
            _check_name("idempotency_key", idempotency_key)
        payload = core.encode_fields(fields, self.codec)
        return core.add(self.spec, payload, idempotency_key=idempotency_key, ttl_ms=self._idem_ttl_ms)

    def _add_many(self, entries: Sequence[Mapping[str, Any]]) -> Flow[list[str]]:
        self._ns.check_write("Stream.add_many")
        if isinstance(entries, Mapping) or not isinstance(entries, Sequence):
            raise TypeError("add_many takes a sequence of field mappings")
        return core.add_many(self.spec, [core.encode_fields(f, self.codec) for f in entries])

    def _dead_letters(self, count: int, start: str) -> Flow[list[DeadLetter]]:
        self._ns.check_read("Stream.dead_letters")
        return core.dead_letters(self.spec, self.codec, _count("count", count), _check_name("start", start))

    def _metrics(self, group: str) -> Flow[StreamStats]:
        self._ns.check_read("Stream.metrics")
        return core.metrics(self.spec, _check_name("group", group))

    def _trim_acked(self, approximate: bool) -> Flow[int]:
        self._ns.check_write("Stream.trim_acked")
        return core.trim_acked(self.spec, bool(approximate))

    def _delete(self) -> Flow[int]:
        self._ns.check_write("Stream.delete")
        return core.delete(self.spec)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r}>"


class Stream(_StreamBase):
    """A stream under a mount: ``Stream(name, maxlen=... | minid=... | max_age=..., approximate=True)``.

    Trimming (``maxlen``/``minid``/``max_age``) counts entries, not their delivery state: an entry
    can be trimmed before a group read it or while it is pending when producers outrun consumers
    by more than the cap. Consumers count such entries (``stats.gone``) and drop them from the
    pending list. Idempotency markers live ``idempotency_ttl`` s (default: the mount's TTL, else 24 h).
    """

    def add(self, fields: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        """Append an entry; with ``idempotency_key`` a repeat (a retry after a lost reply, a
        concurrent duplicate) returns the first id and adds nothing."""
        return run_sync(self._ns.client, self._add(fields, idempotency_key))

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
        """Delete the stream and its dead-letter stream (groups go with them)."""
        return run_sync(self._ns.client, self._delete())

    def trim_acked(self, *, approximate: bool = True) -> int:
        """Remove the entries every group has read and acked; pending or unread ones stay."""
        return run_sync(self._ns.client, self._trim_acked(approximate))

    def consumer(self, group: str, name: str | None = None, **options: Any) -> Consumer:
        return Consumer(self, group, name, **options)


class AsyncStream(_StreamBase):
    """The asyncio twin of :class:`Stream`."""

    _asyncio = True

    async def add(self, fields: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        return await run_async(self._ns.client, self._add(fields, idempotency_key))

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


class _ConsumerBase:
    _asyncio = False
    _stream_cls: type[_StreamBase] = Stream
    _message_cls: type[BaseMessage] = StreamMessage

    def __init__(
        self,
        stream: _StreamBase | str,
        group: str,
        name: str | None = None,
        *,
        count: int = 100,
        block: float = 2.0,
        min_idle: float = 30.0,
        reclaim_interval: float | None = None,
        max_deliveries: int = 5,
        retry_delay: float = 0.0,
        start: str = "0",
        dead_letter_maxlen: int = 10000,
        delete_dead: bool = False,
        reclaim_batch: int = 1,
        mount: Mount | Namespace | None = None,
        client: Any = None,
    ) -> None:
        if isinstance(stream, str):
            stream = self._stream_cls(stream, mount=mount, client=client)
        elif not isinstance(stream, self._stream_cls):
            want = self._stream_cls.__name__
            raise TypeError(f"stream must be a {want} or a stream name, not {type(stream).__name__}")
        elif mount is not None or client is not None:
            raise ValueError("pass mount=/client= to the Stream, not to a consumer built from it")
        self.stream = stream
        ns = stream.namespace
        ns.check_read("Consumer")
        ns.check_write("Consumer (acks)")
        min_idle_s = _positive("min_idle", min_idle)
        interval = min(5.0, min_idle_s / 2) if reclaim_interval is None else reclaim_interval
        _check_delay(retry_delay, min_idle_s, "retry_delay")
        self._cfg = ConsumerConfig(
            group=_check_name("group", group),
            name=_check_name("consumer name", name) if name is not None else default_consumer_name(),
            count=_count("count", count),
            block=_positive("block", block, allow_zero=True),
            min_idle=min_idle_s,
            reclaim_interval=_positive("reclaim_interval", interval),
            max_deliveries=_count("max_deliveries", max_deliveries, minimum=0),
            retry_delay=_positive("retry_delay", retry_delay, allow_zero=True),
            start=_check_name("start", start),
            dlq_maxlen=_count("dead_letter_maxlen", dead_letter_maxlen, minimum=0),
            delete_dead=bool(delete_dead),
            reclaim_count=_count("reclaim_batch", reclaim_batch),
            block_cap=core.block_cap(socket_timeout(ns.client)),
            transient=_TRANSIENT,
        )
        self._state = ConsumerState()

    @property
    def group(self) -> str:
        return self._cfg.group

    @property
    def name(self) -> str:
        return self._cfg.name

    @property
    def config(self) -> ConsumerConfig:
        return self._cfg

    @property
    def stats(self) -> ConsumerStats:
        """Local counters: delivered, acked, failed, retried, dead_lettered, reclaimed, ..."""
        return self._state.stats

    @property
    def _client(self) -> Any:
        return self.stream.namespace.client

    def stop(self) -> None:
        """Ask ``run`` to finish: it stops reading, ends the message in hand, releases the rest
        of the batch for other consumers and sends its acks (within ``block`` seconds)."""
        self._state.stopping = True

    def _wrap(self, delivery: Delivery) -> list[Any]:
        cls, codec, counts = self._message_cls, self.stream.codec, delivery.counts
        out = []
        for i, (mid, raw) in enumerate(delivery.entries):
            out.append(cls(mid, raw, 1 if counts is None else counts[i], codec, self))
        return out

    def _read(self, count: int | None, block: float | None) -> Flow[Delivery]:
        c = None if count is None else _count("count", count)
        b = None if block is None else _positive("block", block, allow_zero=True)
        return core.next_batch(self.stream.spec, self._cfg, self._state, c, b)

    def _reclaim(self) -> Flow[Delivery]:
        return core.reclaim(self.stream.spec, self._cfg, self._state)

    def _run(
        self, call_batch: Callable[[Delivery], Any], until_idle: float | None, max_messages: int | None
    ) -> Flow[ConsumerStats]:
        if until_idle is not None:
            _positive("until_idle", until_idle, allow_zero=True)
        if max_messages is not None:
            _count("max_messages", max_messages)
        return core.work(
            self.stream.spec,
            self._cfg,
            self._state,
            call_batch,
            until_idle=until_idle,
            max_messages=max_messages,
        )

    def _prune(self, idle: float) -> Flow[list[str]]:
        return core.prune_consumers(self.stream.spec, self._cfg, _positive("idle", idle, allow_zero=True))

    def _dead(self, message: BaseMessage | str, error: str) -> Flow[int]:
        (mid,) = _ids([message])
        return core.dead_letter(self.stream.spec, self._cfg, mid, str(error))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stream.key!r} group={self.group!r} name={self.name!r}>"


class Consumer(_ConsumerBase):
    """A member of a consumer group: ``Consumer(stream, group, name, ...)``.

    ``count`` entries per read, ``block`` s per wait; entries pending longer than ``min_idle`` s in a
    dead consumer's list are reclaimed every ``reclaim_interval`` s (on a timer, traffic or not);
    a handler failing on delivery ``max_deliveries`` sends the entry to the dead-letter stream
    (``0``: never), an earlier failure retries it after ``retry_delay`` s. ``start``: where a new
    group begins, ``"0"`` (the whole stream, default) or ``"$"`` (new entries only).
    ``reclaim_batch``: entries coming back from a dead consumer (or from this one's previous life)
    are taken this many at a time; each take counts a delivery for all it takes, so the default 1
    charges a message that crashes its process to that message alone, not to its batch mates.
    """

    def ensure_group(self) -> bool:
        """Create the group if needed (idempotent); True when this call created it."""
        return run_sync(self._client, core.ensure_group(self.stream.spec, self._cfg, self._state))

    def read(self, count: int | None = None, block: float | None = None) -> list[StreamMessage]:
        """The next batch: own pending first, then reclaimed, then new entries (waits ``block`` s)."""
        return self._wrap(run_sync(self._client, self._read(count, block)))

    def reclaim(self) -> list[StreamMessage]:
        """Claim entries idle longer than ``min_idle`` now (``read``/``run`` also do it on a timer)."""
        return self._wrap(run_sync(self._client, self._reclaim()))

    def ack(self, *messages: StreamMessage | str) -> int:
        return run_sync(self._client, core.ack(self.stream.spec, self.group, _ids(messages)))

    def nack(self, *messages: StreamMessage | str, delay: float = 0.0) -> int:
        """Give entries back for another delivery after ``delay`` s; counts no delivery."""
        d = _check_delay(delay, self._cfg.min_idle)
        return run_sync(self._client, core.nack(self.stream.spec, self._cfg, _ids(messages), d))

    def dead_letter(
        self, message: StreamMessage | str, error: str = "dead-lettered by the application"
    ) -> bool:
        """Move one pending entry to the dead-letter stream and ack it, atomically."""
        return bool(run_sync(self._client, self._dead(message, error)))

    def metrics(self) -> StreamStats:
        return self.stream.metrics(self.group)  # type: ignore[no-any-return, attr-defined]

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
        return run_sync(
            self._client, self._run(lambda d: self._call_batch(handler, d), until_idle, max_messages)
        )

    def _call_batch(self, handler: Callable[[StreamMessage], Any], delivery: Delivery) -> BatchResult:
        msgs: list[BaseMessage] = []
        failures: dict[int, BaseException] = {}
        st, codec, counts = self._state, self.stream.codec, delivery.counts
        for i, (mid, raw) in enumerate(delivery.entries):
            if st.stopping:
                break
            m = StreamMessage(mid, raw, 1 if counts is None else counts[i], codec, self)
            msgs.append(m)
            try:
                handler(m)
            except Exception as exc:
                failures[i] = exc
        return BatchResult(msgs, failures)


class AsyncConsumer(_ConsumerBase):
    """The asyncio twin of :class:`Consumer`; handlers may be ``async def`` or plain functions."""

    _asyncio = True
    _stream_cls = AsyncStream
    _message_cls = AsyncStreamMessage

    async def ensure_group(self) -> bool:
        return await run_async(self._client, core.ensure_group(self.stream.spec, self._cfg, self._state))

    async def read(self, count: int | None = None, block: float | None = None) -> list[AsyncStreamMessage]:
        return self._wrap(await run_async(self._client, self._read(count, block)))

    async def reclaim(self) -> list[AsyncStreamMessage]:
        return self._wrap(await run_async(self._client, self._reclaim()))

    async def ack(self, *messages: AsyncStreamMessage | str) -> int:
        return await run_async(self._client, core.ack(self.stream.spec, self.group, _ids(messages)))

    async def nack(self, *messages: AsyncStreamMessage | str, delay: float = 0.0) -> int:
        d = _check_delay(delay, self._cfg.min_idle)
        return await run_async(self._client, core.nack(self.stream.spec, self._cfg, _ids(messages), d))

    async def dead_letter(
        self, message: AsyncStreamMessage | str, error: str = "dead-lettered by the application"
    ) -> bool:
        return bool(await run_async(self._client, self._dead(message, error)))

    async def metrics(self) -> StreamStats:
        return await self.stream.metrics(self.group)  # type: ignore[no-any-return, attr-defined]

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
        flow = self._run(lambda d: self._call_batch(handler, d), until_idle, max_messages)
        return await run_async(self._client, flow)

    async def _call_batch(
        self, handler: Callable[[AsyncStreamMessage], Any], delivery: Delivery
    ) -> BatchResult:
        msgs: list[BaseMessage] = []
        failures: dict[int, BaseException] = {}
        st, codec, counts = self._state, self.stream.codec, delivery.counts
        isawaitable = inspect.isawaitable
        for i, (mid, raw) in enumerate(delivery.entries):
            if st.stopping:
                break
            m = AsyncStreamMessage(mid, raw, 1 if counts is None else counts[i], codec, self)
            msgs.append(m)
            try:
                r = handler(m)
                if r is not None and isawaitable(r):
                    await r
            except Exception as exc:
                failures[i] = exc
        return BatchResult(msgs, failures)
