"""What the stream shells share: argument checks and flow building for ``Stream`` /
``AsyncStream`` (``_StreamBase``) and ``Consumer`` / ``AsyncConsumer`` (``_ConsumerBase``).

The public classes in :mod:`redispatterns.streams` add one-line methods over ``run_sync`` /
``run_async``; nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import socket
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core import stream_consumer as worker
from ._core import streams as core
from ._core import validate
from ._core.codec import JsonCodec, as_str
from ._core.mount import Mount
from ._core.ops import Flow
from ._core.stream_consumer import (
    Backoff,
    BaseMessage,
    ConsumerConfig,
    ConsumerState,
    ConsumerStats,
    Delivery,
    decode_fields,
)
from ._core.streams import DeadLetter, StreamSpec, StreamStats
from ._runner import socket_timeout
from .mount import Namespace, resolve

_loads = orjson.loads  # a module global: a comprehension reads it without a closure cell

_TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
_DEFAULT_IDEMPOTENCY_TTL = 86400.0
MAX_CONCURRENCY = 1024


def _free_refs() -> int:
    """What ``sum(map(sys.getrefcount, pool))`` counts for each pooled message that nothing else
    holds (the interpreter's own references differ between Python versions): ``_recycled``
    compares that sum with the batch size times this; -1 where there is no ``sys.getrefcount``:
    no reuse."""
    refs = getattr(sys, "getrefcount", None)
    if refs is None:
        return -1
    pool: list[object] = [object(), object()]
    return int(sum(map(refs, pool))) // 2


_FREE_REFS = _free_refs()


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


def _retry_policy(retry_delay: object, min_idle: float) -> Backoff:
    if isinstance(retry_delay, Backoff):
        _check_delay(retry_delay.max, min_idle, "retry_delay's max")
        return retry_delay
    if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)):
        raise TypeError(
            f"retry_delay must be seconds or a Backoff (Backoff.fixed / Backoff.exponential), "
            f"not {type(retry_delay).__name__}"
        )
    return Backoff.fixed(_check_delay(retry_delay, min_idle, "retry_delay"))


def _epoch_ms(when: object) -> int:
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError("not_before must be an aware datetime (with a tzinfo), or epoch seconds")
        return round(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, (int, float)) or when != when or when < 0:
        raise TypeError(f"not_before must be a datetime or seconds since the epoch, not {when!r}")
    return round(when * 1000)


def default_consumer_name() -> str:
    """``<host>-<pid>``: distinct per process. Pass a stable name to recover own pending at restart."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _ids(items: Sequence[BaseMessage | str]) -> list[Any]:
    out: list[Any] = []
    for m in items:
        if isinstance(m, BaseMessage):
            m.settled = True
            owner = m._owner
            if owner is not None:  # tells its consumer's loop to look at each message's flag
                owner._state.settled_by_hand = True
            out.append(m.id)
        elif isinstance(m, str) and m:
            out.append(m)
        else:
            raise TypeError(f"expected a StreamMessage or an entry id str, not {type(m).__name__}")
    return out


class _StreamBase:
    _asyncio: ClassVar[bool] = False

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
    def delayed_key(self) -> str:
        """The sorted set holding entries added with ``delay=`` / ``not_before=`` until they are due."""
        return self.spec.delayed

    @property
    def namespace(self) -> Namespace:
        return self._ns

    def _add(
        self, fields: Mapping[str, Any], idempotency_key: str | None, delay: float | None, not_before: object
    ) -> Flow[str]:
        self._ns.check_write("Stream.add")
        if idempotency_key is not None:
            _check_name("idempotency_key", idempotency_key)
        payload = core.encode_fields(fields, self.codec)
        if delay is None and not_before is None:
            return core.add(self.spec, payload, idempotency_key=idempotency_key, ttl_ms=self._idem_ttl_ms)
        if delay is not None and not_before is not None:
            raise ValueError("pass delay= or not_before=, not both")
        due_ms = None if not_before is None else _epoch_ms(not_before)
        delay_ms = None if delay is None else round(_positive("delay", delay, allow_zero=True) * 1000)
        if delay_ms == 0:
            return core.add(self.spec, payload, idempotency_key=idempotency_key, ttl_ms=self._idem_ttl_ms)
        return core.add_delayed(
            self.spec, payload, delay_ms=delay_ms, due_ms=due_ms, idempotency_key=idempotency_key,
            ttl_ms=self._idem_ttl_ms,
        )  # fmt: skip

    def _add_many(self, entries: Sequence[Mapping[str, Any]]) -> Flow[list[str]]:
        self._ns.check_write("Stream.add_many")
        if isinstance(entries, Mapping) or not isinstance(entries, Sequence):
            raise TypeError("add_many takes a sequence of field mappings")
        codec = self.codec
        return core.add_many(self.spec, [core.encode_fields(f, codec) for f in entries])

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


class _ConsumerBase:
    _asyncio: ClassVar[bool] = False
    _stream_cls: ClassVar[type[_StreamBase]]
    _message_cls: ClassVar[type[BaseMessage]]

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
        retry_delay: float | Backoff = 0.0,
        concurrency: int = 1,
        order_by: str | Callable[[Any], Hashable] | None = None,
        on_error: Callable[[BaseException, Any], Any] | None = None,
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
        self._stream = stream
        ns = stream.namespace
        ns.check_read("Consumer")
        ns.check_write("Consumer (acks)")
        min_idle_s = _positive("min_idle", min_idle)
        interval = min(5.0, min_idle_s / 2) if reclaim_interval is None else reclaim_interval
        interval = _positive("reclaim_interval", interval)
        if validate.is_async_callable(order_by):
            raise TypeError("order_by must be a field name or a plain function of the message, not async")
        self._key_reads_raw = False  # the ordering key reads the entries' raw fields
        if order_by is None or callable(order_by):
            self._key = order_by
        elif isinstance(order_by, str) and order_by:
            self._key = worker.field_key(order_by)
            self._key_reads_raw = True
        else:
            raise TypeError("order_by must be a field name, a function of the message, or None")
        hint = "taking (exception, message)"
        self._on_error = validate.callable_or_none(on_error, "on_error", hint)
        if not self._asyncio and validate.is_async_callable(on_error):
            raise TypeError("a Consumer takes plain functions; use AsyncConsumer for async ones")
        self._cfg = ConsumerConfig(
            group=_check_name("group", group),
            name=_check_name("consumer name", name) if name is not None else default_consumer_name(),
            count=_count("count", count),
            block=_positive("block", block, allow_zero=True),
            min_idle=min_idle_s,
            reclaim_interval=interval,
            max_deliveries=_count("max_deliveries", max_deliveries, minimum=0),
            retry=_retry_policy(retry_delay, min_idle_s),
            start=_check_name("start", start),
            dlq_maxlen=_count("dead_letter_maxlen", dead_letter_maxlen, minimum=0),
            delete_dead=bool(delete_dead),
            reclaim_count=_count("reclaim_batch", reclaim_batch),
            block_cap=worker.block_cap(socket_timeout(ns.client)),
            transient=_TRANSIENT,
            concurrency=validate.count(concurrency, "concurrency", maximum=MAX_CONCURRENCY),
            delayed_poll=min(1.0, interval),
        )
        self._state = ConsumerState()
        self._pool: list[Any] = []  # the last batch's messages, filled again by the next (``_recycled``)
        self._pool_mixed = False  # the pool holds a deferred message (``_recycled``)

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
        """Local counters: delivered, acked, failed, retried, dead_lettered, reclaimed, promoted, ..."""
        return self._state.stats

    @property
    def _client(self) -> Any:
        return self._stream.namespace.client

    def stop(self) -> None:
        """Ask ``run`` to finish: it stops reading, ends the handler calls in progress, releases
        the rest of the batch for other consumers and sends its acks (within ``block`` seconds)."""
        self._state.stopping = True

    def _wrap(self, delivery: Delivery) -> list[Any]:
        """New messages for the entries of ``delivery`` (``read`` and ``reclaim`` hand them over)."""
        cls, codec, counts = self._message_cls, self._stream.codec, delivery.counts
        return [cls(mid, raw, 1 if counts is None else counts[i], codec, self)
                for i, (mid, raw) in enumerate(delivery.entries)]  # fmt: skip

    def _recycled(self, delivery: Delivery) -> list[Any]:
        """The messages ``run`` hands its handler for a batch: the last batch's list and message
        objects, filled again in place; a message something else still holds (a handler kept it)
        is left to its holder as it was and replaced by a new one. A drain then allocates, and
        the garbage collector tracks, no object per entry beyond what redis-py's reply made.

        First deliveries only (the drain); entries coming back from a claim get new messages."""
        if delivery.counts is not None or _FREE_REFS < 0:
            return self._wrap(delivery)
        entries = delivery.entries
        pool, n = self._pool, len(entries)
        fresh = self._fresh
        if len(pool) < n:
            pool += [fresh() for _ in range(n - len(pool))]
        elif len(pool) > n:
            del pool[n:]
        if not n:
            return pool
        if self._pool_mixed:  # a deferred message was left in the pool: made again
            self._pool_mixed = False
            first = self._first_delivery
            pool[:] = [m if type(m) is first else fresh() for m in pool]
        if sum(map(sys.getrefcount, pool)) != n * _FREE_REFS:  # some are held: left to their holders
            for i, count in enumerate(list(map(sys.getrefcount, pool))):
                if count != _FREE_REFS:
                    pool[i] = fresh()
        if self._state.settled_by_hand:  # flags set in the last batch: cleared (else all False)
            for m in pool:
                m.settled = False
        if self._key_reads_raw:
            for m, (_, raw) in zip(pool, entries, strict=True):
                m._raw = raw
        text = bytes.decode if type(entries[0][0]) is bytes else as_str  # ids: ASCII
        codec = self._stream.codec
        if type(codec) is JsonCodec:  # decoded here, in this loop's frame (no closure: _loads)
            for m, (mid, raw) in zip(pool, entries, strict=True):
                m.id = text(mid)
                try:
                    m.fields = {k.decode(): _loads(v) for k, v in raw.items()}
                except Exception:  # not plain JSON: the codec's own decoding, which may refuse it
                    self._decode_or_defer(m, raw, codec)
        else:
            for m, (mid, raw) in zip(pool, entries, strict=True):
                m.id = text(mid)
                self._decode_or_defer(m, raw, codec)
        return pool

    def _decode_or_defer(self, m: BaseMessage, raw: Any, codec: Any) -> None:
        """``m.fields`` decoded by the codec; an entry it refuses makes ``m`` deferred (its
        ``fields`` raises the DecodeError when read)."""
        try:
            m.fields = decode_fields(raw, codec)
        except Exception:
            worker.defer(m, raw)
            self._pool_mixed = True

    def _fresh(self) -> BaseMessage:
        m = self._first_delivery()
        m.settled = False
        return m

    @functools.cached_property
    def _first_delivery(self) -> Callable[[], BaseMessage]:
        """The message class for first deliveries, bound to this consumer: its owner, codec and
        delivery count (1) are class attributes and it is called with no arguments (``_recycled``
        sets the rest), so a message costs no Python-level ``__init__``."""
        cls = self._message_cls
        ns = {"__slots__": (), "__init__": object.__init__, "_owner": self, "_codec": self._stream.codec,
              "delivery_count": 1, "__module__": cls.__module__,
              "__qualname__": cls.__qualname__}  # fmt: skip
        return type(cls.__name__, (cls,), ns)

    def _read(self, count: int | None, block: float | None) -> Flow[Delivery]:
        c = None if count is None else _count("count", count)
        b = None if block is None else _positive("block", block, allow_zero=True)
        return worker.next_batch(self._stream.spec, self._cfg, self._state, c, b)

    def _reclaim(self) -> Flow[Delivery]:
        return worker.reclaim(self._stream.spec, self._cfg, self._state)

    def _ensure(self) -> Flow[bool]:
        return worker.ensure_group(self._stream.spec, self._cfg, self._state)

    def _ack(self, messages: Sequence[BaseMessage | str]) -> Flow[int]:
        return worker.ack(self._stream.spec, self.group, _ids(messages))

    def _nack(self, messages: Sequence[BaseMessage | str], delay: float | None) -> Flow[int]:
        """``delay=None``: each entry after the retry policy's delay for its delivery count."""
        if delay is not None:
            d = _check_delay(delay, self._cfg.min_idle)
            return worker.nack(self._stream.spec, self._cfg, _ids(messages), d)
        retry = self._cfg.retry
        counts = [m.delivery_count if isinstance(m, BaseMessage) else 1 for m in messages]
        delays = {mid: retry.delay(n) for mid, n in zip(_ids(messages), counts, strict=True)}
        return worker.nack_each(self._stream.spec, self._cfg, delays)

    def _run(
        self, handler: Callable[[Any], Any], until_idle: float | None, max_messages: int | None
    ) -> Flow[ConsumerStats]:
        if until_idle is not None:
            _positive("until_idle", until_idle, allow_zero=True)
        if max_messages is not None:
            _count("max_messages", max_messages)
        return worker.work(
            self._stream.spec,
            self._cfg,
            self._state,
            handler,
            self._recycled,
            key=self._key,
            on_error=self._on_error,
            until_idle=until_idle,
            max_messages=max_messages,
        )

    def _prune(self, idle: float) -> Flow[list[str]]:
        spec, idle_s = self._stream.spec, _positive("idle", idle, allow_zero=True)
        return worker.prune_consumers(spec, self._cfg, idle_s)

    def _dead(self, message: BaseMessage | str, error: str) -> Flow[int]:
        (mid,) = _ids([message])
        return worker.dead_letter(self._stream.spec, self._cfg, mid, str(error))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._stream.key!r} group={self.group!r} name={self.name!r}>"
