"""Consumer groups: the worker loop's flows and decisions, written once for both runtimes.

Delivery counts follow the server (measured on Redis 7.0 and Valkey 8.1): ``XREADGROUP >`` sets 1,
every claim that returns the body (XAUTOCLAIM, XCLAIM, re-reading own pending) adds 1, and the
nack polyfill (``XCLAIM ... IDLE n JUSTID``) adds nothing. A handler failure on delivery
``max_deliveries`` moves the entry to the dead-letter stream; an entry claimed with a count beyond
``max_deliveries`` (its consumer died while handling it) is moved without running the handler again.

The handler runs through ``ComputeEach``: ``concurrency`` calls at a time (the runner's threads or
tasks), entries of one ordering key one at a time and in order. Acks of a batch ride with the next
read; failures are retried after the ``Backoff``'s delay (via the nack polyfill) or dead-lettered.
Delayed entries (``Stream.add(delay=)``) are moved into the stream by the consumers' reads, in the
same round trip, when the server clock says they are due.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from ..errors import StreamError
from . import validate
from .codec import Codec, JsonCodec, as_str
from .ops import (
    NOT_RUN,
    Batch,
    Command,
    Compute,
    ComputeEach,
    Flow,
    Now,
    Script,
    Sleep,
    trusted_batch,
    trusted_command,
)
from .scripts import load
from .streams import StreamSpec, trim

__all__ = [
    "Backoff",
    "BaseMessage",
    "ClaimResult",
    "ConsumerConfig",
    "ConsumerState",
    "ConsumerStats",
    "Delivery",
    "ack",
    "decode_fields",
    "defer",
    "deferred",
    "block_cap",
    "claim",
    "dead_letter",
    "ensure_group",
    "error_backoff",
    "flush",
    "nack",
    "next_batch",
    "prune_consumers",
    "reclaim",
    "release",
    "settle",
    "settle_batch",
    "work",
]

log = logging.getLogger("redispatterns.streams")
_MAX_DLQ_ERROR = 2000  # characters of the last error kept in a dead letter
_RELEASED_IDLE_MS = 86_400_000  # released entries look idle for a day: any consumer's reclaim takes them
PROMOTE_BATCH = 1000  # delayed entries moved into the stream per read, at most
_NOW = Now()
_first = itemgetter(0)
_loads = orjson.loads


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed entry waits before its next delivery: ``Backoff.fixed(2.0)`` or
    ``Backoff.exponential(0.5, 30.0, jitter=0.5)`` (0.5 s, 1 s, 2 s ... capped at 30 s, each cut by
    up to half at random so retries of a burst spread out).

    Delivery ``n``'s failure waits ``min(max, first * factor ** (n - 1))``, minus up to ``jitter``
    of it at random. A consumer needs ``max <= min_idle`` (a given-back entry looks idle at once).
    """

    first: float = 0.0
    factor: float = 1.0
    max: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        validate.seconds(self.first, "Backoff first delay", zero_ok=True)
        validate.seconds(self.max, "Backoff max delay", zero_ok=True)
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not self.factor >= 1:
            raise ValueError(f"Backoff factor must be a number >= 1, got {self.factor!r}")
        validate.fraction(self.jitter, "Backoff jitter")
        if self.max < self.first:
            raise ValueError(f"Backoff max ({self.max}) must be at least its first delay ({self.first})")

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        """The same ``delay`` seconds after every failure."""
        d = validate.seconds(delay, "delay", zero_ok=True)
        return cls(d, 1.0, d, 0.0)

    @classmethod
    def exponential(cls, first: float, max: float, *, factor: float = 2.0, jitter: float = 0.5) -> Backoff:
        """``first`` s, then times ``factor`` per failure up to ``max`` s; ``jitter``: the share of
        each delay taken off at random (0: none, 1: anywhere between 0 and the delay)."""
        return cls(first, factor, max, jitter)

    def delay(self, delivery_count: int) -> float:
        """Seconds to wait after the failure of delivery ``delivery_count``."""
        d = min(self.max, self.first * self.factor ** min(64, max(0, delivery_count - 1)))
        if self.jitter:
            d -= d * self.jitter * random.random()
        return d


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """A consumer's settings, validated by the shells (times in seconds)."""

    group: str
    name: str
    count: int = 100
    block: float = 2.0
    min_idle: float = 30.0
    reclaim_interval: float = 5.0
    max_deliveries: int = 5
    retry: Backoff = Backoff()
    start: str = "0"
    dlq_maxlen: int = 10000
    delete_dead: bool = False
    block_cap: float = 4.0  # longest single BLOCK: below the client's socket timeout
    # entries coming back (reclaimed, or own pending after a restart) are taken this many at a
    # time: each claim adds a delivery to every entry it takes, so taking one at a time charges a
    # process-killing entry's crashes to that entry alone, not to the rest of its batch
    reclaim_count: int = 1
    transient: tuple[type[BaseException], ...] = ()  # errors after which the loop backs off
    concurrency: int = 1  # handler calls at a time
    delayed_poll: float = 1.0  # longest wait before looking for due delayed entries again

    @property
    def min_idle_ms(self) -> int:
        return max(1, round(self.min_idle * 1000))


@dataclass
class ConsumerStats:
    """Counters of one consumer instance (local to the process)."""

    delivered: int = 0
    acked: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    recovered: int = 0
    gone: int = 0  # pending entries found deleted or trimmed from the stream
    released: int = 0  # handed back unprocessed at shutdown
    read_errors: int = 0
    promoted: int = 0  # delayed entries this consumer moved into the stream when due


@dataclass
class ConsumerState:
    """The mutable state of one consumer; shells set ``stopping`` to ask the loop to finish."""

    group_ready: bool = False
    recovering: bool = True  # re-read own pending entries first (after start or a lost reply)
    own_cursor: str = "0-0"
    reclaim_cursor: str = "0-0"
    next_reclaim: float = 0.0
    next_promote: float = 0.0
    # empty until a stop is asked (``stopping``): its ``__len__`` is the check the runner makes
    # before each handler call, a C call where a method would cost about twice as much per entry
    stop_flag: list[bool] = field(default_factory=list)
    acks: list[Any] = field(default_factory=list)  # ids acked locally, sent with the next read
    # A message of the batch was marked settled: acked, nacked or dead-lettered by its handler, or
    # by the loop after a failure (the next refill of the messages clears their flags).
    settled_by_hand: bool = False
    read_key: tuple[int, int | None] | None = None  # (count, block ms) of read_op
    # The last read filled its batch: the next one does not block (more entries are likely there)
    full: bool = False
    read_op: Command | None = None  # the last read sent, reused while its arguments stay the same
    errors_in_row: int = 0
    stats: ConsumerStats = field(default_factory=ConsumerStats)

    @property
    def stopping(self) -> bool:
        """A stop was asked: ``run`` finishes the message in hand, gives back the rest, returns."""
        return bool(self.stop_flag)

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.stop_flag[:] = [True] if value else []

    def is_stopping(self) -> bool:
        return bool(self.stop_flag)


class BaseMessage:
    """An entry delivered to a consumer: ``id``, ``fields`` (decoded as the message is made),
    ``delivery_count``."""

    __slots__ = ("_codec", "_owner", "_raw", "delivery_count", "fields", "id", "settled")
    id: str  # the entry id as text
    # The entry's fields decoded with the stream's codec. An entry the codec refuses makes a
    # message of the class's ``deferred`` twin, whose ``fields`` raises the ``DecodeError`` when
    # read (the class has no ``__getattr__``: it would make every attribute read a slow one).
    # ``_raw``: the fields as the server sent them (a drain's messages keep them only when they
    # are deferred or an ordering key reads them).
    fields: dict[str, Any]

    def __init__(
        self, mid: Any, raw: Mapping[Any, Any], delivery_count: int, codec: Codec, owner: Any = None
    ) -> None:
        self.id = as_str(mid)
        self._raw = raw
        self._owner = owner
        self.delivery_count = delivery_count
        self._codec = codec
        self.settled = False  # acked, nacked or dead-lettered already (by the handler or the loop)
        try:
            self.fields = decode_fields(raw, codec)
        except Exception:
            defer(self, raw)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} deliveries={self.delivery_count}>"


_FIELDS: Any = BaseMessage.__dict__["fields"]  # the slot's own descriptor


def _get_deferred(m: BaseMessage) -> dict[str, Any]:
    try:
        return _FIELDS.__get__(m, type(m))  # type: ignore[no-any-return]  # set by hand since
    except AttributeError:
        d = decode_fields(m._raw, m._codec)  # the codec's DecodeError, at every read
        _FIELDS.__set__(m, d)
        return d


def _set_deferred(m: BaseMessage, value: dict[str, Any]) -> None:
    _FIELDS.__set__(m, value)


def _del_deferred(m: BaseMessage) -> None:
    _FIELDS.__delete__(m)


def deferred(cls: type[BaseMessage]) -> type[BaseMessage]:
    """``cls``'s twin for an entry its codec refuses: the same slots and methods, its ``fields``
    decoded when read (raising the codec's ``DecodeError``). A message takes it in place
    (``m.__class__ = deferred(type(m))``); the twin is kept on ``cls`` (``_twin``)."""
    if cls.__dict__.get("_is_deferred"):
        return cls
    twin: type[BaseMessage] | None = cls.__dict__.get("_twin")
    if twin is None:
        fields = property(_get_deferred, _set_deferred, _del_deferred)
        ns = {"__slots__": (), "fields": fields, "_is_deferred": True,
              "__module__": cls.__module__, "__qualname__": cls.__qualname__}  # fmt: skip
        twin = type(cls.__name__, (cls,), ns)
        setattr(cls, "_twin", twin)  # noqa: B010  (a class attribute made here)
    return twin


def defer(m: BaseMessage, raw: Mapping[Any, Any]) -> None:
    """Make ``m``, whose codec refuses its entry's fields ``raw``, a message of its class's
    ``deferred`` twin."""
    m._raw = raw
    try:
        _FIELDS.__delete__(m)  # a value from an earlier use of a recycled message
    except AttributeError:
        pass
    m.__class__ = deferred(type(m))


def decode_fields(raw: Mapping[Any, Any], codec: Codec) -> dict[str, Any]:
    """An entry's fields, names as text and values through ``codec``.

    With the JSON codec, values go straight to orjson (what ``JsonCodec.decode`` does with text
    that is JSON: marked bytes and pickles are never valid UTF-8, so orjson refuses them); any
    refusal (a marked or foreign value, a non-UTF-8 name, a client that decodes replies) leaves
    the whole entry to the codec, which decodes it or says why not."""
    if type(codec) is JsonCodec:
        try:
            return {k.decode(): _loads(v) for k, v in raw.items()}
        except (ValueError, AttributeError):
            pass
    dec = codec.decode
    return {as_str(k): dec(v) for k, v in raw.items()}


@dataclass(slots=True)  # not frozen (a frozen __init__ costs a microsecond per read): treat as a value
class Delivery:
    """A batch of entries: ``(id, fields)`` pairs; ``counts`` is ``None`` when all are first deliveries."""

    entries: Sequence[tuple[Any, Mapping[Any, Any]]]
    counts: Sequence[int] | None = None

    def count_of(self, i: int) -> int:
        return 1 if self.counts is None else self.counts[i]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    cursor: str
    delivery: Delivery
    gone: tuple[str, ...]
    dead: tuple[tuple[str, int], ...]  # (id, deliveries) moved to the dead-letter stream


# --------------------------------------------------------------------------- pure helpers


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def block_cap(socket_timeout: float | None) -> float:
    """The longest single ``BLOCK`` (s) that a client with this socket timeout survives."""
    if socket_timeout is None or socket_timeout <= 0:
        return 30.0
    margin = max(0.25, 0.2 * socket_timeout)
    return max(0.005, socket_timeout - margin)


def error_backoff(errors_in_row: int) -> float:
    """Seconds to wait after ``errors_in_row`` consecutive connection errors (capped)."""
    return float(min(2.0, 0.05 * (2 ** max(0, errors_in_row - 1))))


def settle(cfg: ConsumerConfig, delivery_count: int) -> str:
    """After a handler failure: ``"dead"`` (dead-letter now) or ``"retry"``."""
    if cfg.max_deliveries and delivery_count >= cfg.max_deliveries:
        return "dead"
    return "retry"


def field_key(name: str) -> Callable[[BaseMessage], Hashable]:
    """An ordering key: the raw (encoded) value of field ``name``; entries without it share one lane."""
    b = name.encode()

    def key(m: BaseMessage) -> Hashable:
        raw = m._raw
        v = raw.get(b)
        return raw.get(name) if v is None else v

    return key


def _is_busygroup(exc: BaseException) -> bool:
    return "BUSYGROUP" in str(exc)


def _check_group(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, exc: BaseException) -> None:
    """Turn the server's NOGROUP (the stream or group was deleted under us) into a StreamError."""
    text = str(exc)
    if "NOGROUP" in text or "requires the key to exist" in text:  # the latter: fakeredis's wording
        st.group_ready = False
        raise StreamError(
            f"consumer group {cfg.group!r} of stream {spec.key!r} does not exist (deleted while in use?); "
            "the next read creates it again"
        ) from exc


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_DLQ_ERROR]


# --------------------------------------------------------------------------- consumer flows


def ensure_group(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState | None = None) -> Flow[bool]:
    """Create the group (and the stream) if missing; True when this call created it."""
    if st is not None and st.group_ready:
        return False
    try:
        yield Command("XGROUP", "CREATE", spec.key, cfg.group, cfg.start, "MKSTREAM", keys=(spec.key,))
        created = True
    except Exception as exc:
        if not _is_busygroup(exc):
            raise
        created = False
    if st is not None:
        st.group_ready = True
    return created


def _parse_claim(reply: Sequence[Any]) -> ClaimResult:
    cursor, rows, gone, dead = reply
    entries = [(r[0], _pairs(r[2])) for r in rows]
    counts = [int(r[1]) for r in rows]
    return ClaimResult(
        as_str(cursor),
        Delivery(entries, counts),
        tuple(as_str(g) for g in gone),
        tuple((as_str(d[0]), int(d[1])) for d in dead),
    )


def claim(
    spec: StreamSpec, cfg: ConsumerConfig, mode: str, cursor: str = "0-0", st: ConsumerState | None = None
) -> Flow[ClaimResult]:
    """Take idle pending entries of any consumer (``"idle"``) or this consumer's own (``"own"``),
    ``cfg.reclaim_count`` at a time.

    Entries delivered more than ``max_deliveries`` times go to the dead-letter stream in the same
    script, so the handler never sees them again. Acks queued in ``st`` are sent first: an entry
    handled before its batch mate crashed the process is not charged that crash again.
    """
    script = Script(
        load("stream_claim"),
        keys=(spec.key, spec.dlq),
        args=(cfg.group, cfg.name, mode, cfg.min_idle_ms, cursor, cfg.reclaim_count, cfg.max_deliveries,
              cfg.dlq_maxlen, 1 if cfg.delete_dead else 0),
    )  # fmt: skip
    if st is None:
        res = _parse_claim((yield script))
    else:
        res = _parse_claim((yield from _after_acks(spec, cfg, st, script)))
    for mid, n in res.dead:
        log.error(
            "stream %s group %s: entry %s dead-lettered after %d deliveries without an ack "
            "(its consumer crashed or timed out handling it)", spec.key, cfg.group, mid, n,
        )  # fmt: skip
    return res


def _after_acks(
    spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, *ops: Command | Script
) -> Flow[Any]:
    """The last op's reply (and the others', as a list, when there are several); the acks queued
    in ``st`` go first in the same round trip (one pipeline, one slot). They stay queued until
    that round trip succeeds (a repeated XACK is harmless)."""
    acks = st.acks
    if not acks and len(ops) == 1:
        return (yield ops[0])
    if acks:
        ops = (Command("XACK", spec.key, cfg.group, *acks, keys=(spec.key,), retryable=False), *ops)
    replies = yield Batch(ops)
    if acks:
        st.acks = []
        st.stats.acked += len(acks)
        replies = replies[1:]
    return replies[0] if len(replies) == 1 else replies


def ack(spec: StreamSpec, group: str, ids: Sequence[Any]) -> Flow[int]:
    if not ids:
        return 0
    return int((yield Command("XACK", spec.key, group, *ids, keys=(spec.key,))))


def _idle_ms(cfg: ConsumerConfig, delay: float) -> int:
    return _RELEASED_IDLE_MS if delay < 0 else max(0, cfg.min_idle_ms - round(delay * 1000))


def _nack_op(spec: StreamSpec, cfg: ConsumerConfig, ids: Sequence[Any], idle_ms: int) -> Script:
    return Script(load("stream_nack"), keys=(spec.key,), args=(cfg.group, cfg.name, idle_ms, *ids))


def nack(spec: StreamSpec, cfg: ConsumerConfig, ids: Sequence[Any], delay: float = 0.0) -> Flow[int]:
    """Release own entries: any consumer's reclaim may take them after ``delay`` seconds.

    The delivery count is unchanged (XCLAIM ... IDLE JUSTID, the pre-8.8 polyfill of XNACK): the
    entry's idle time is set to ``min_idle - delay``, so consumers with this ``min_idle`` reclaim
    it after ``delay``; a negative ``delay`` makes it look idle for a day (claimable by anyone).
    """
    if not ids:
        return 0
    return int((yield _nack_op(spec, cfg, ids, _idle_ms(cfg, delay))))


def nack_each(spec: StreamSpec, cfg: ConsumerConfig, delays: Mapping[Any, float]) -> Flow[int]:
    """Release own entries, each after its own delay (``{id: seconds}``): one round trip."""
    by_idle: dict[int, list[Any]] = {}
    for mid, d in delays.items():
        by_idle.setdefault(_idle_ms(cfg, d), []).append(mid)
    ops = tuple(_nack_op(spec, cfg, ids, idle) for idle, ids in by_idle.items())
    if not ops:
        return 0
    if len(ops) == 1:
        return int((yield ops[0]))
    return sum(int(n) for n in (yield Batch(ops)))


def dead_letter(spec: StreamSpec, cfg: ConsumerConfig, mid: Any, error: str, owner: str = "") -> Flow[int]:
    """Move one pending entry to the dead-letter stream and ack it (atomic); its delivery count, or 0."""
    n = yield Script(
        load("stream_dead_letter"),
        keys=(spec.key, spec.dlq),
        args=(cfg.group, mid, owner, error[:_MAX_DLQ_ERROR], cfg.dlq_maxlen, 1 if cfg.delete_dead else 0),
    )
    if n:
        log.error(
            "stream %s group %s: entry %s dead-lettered after %d deliveries: %s",
            spec.key, cfg.group, as_str(mid), int(n), error[:200],
        )  # fmt: skip
    return int(n)


def _read_op(spec: StreamSpec, cfg: ConsumerConfig, count: int, block_ms: int | None) -> Command:
    key = spec.key
    if block_ms is None:
        return Command("XREADGROUP", "GROUP", cfg.group, cfg.name, "COUNT", count, "STREAMS", key, ">",
                       keys=(key,), retryable=False)  # fmt: skip
    return Command("XREADGROUP", "GROUP", cfg.group, cfg.name, "COUNT", count, "BLOCK", block_ms,
                   "STREAMS", key, ">", keys=(key,), retryable=False)  # fmt: skip


_BLOCK_STEP_MS = 50  # blocks longer than this are cut to a multiple of it (a read op reused)


def _block_ms(wait: float) -> int:
    """A read's BLOCK for ``wait`` s: whole steps, never longer than ``wait`` (an earlier wake-up
    only reads again), so a busy consumer sends the same read op batch after batch."""
    ms = round(wait * 1000)
    return ms - ms % _BLOCK_STEP_MS if ms >= _BLOCK_STEP_MS else max(1, ms)


def _cached_read(
    spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, count: int, block_ms: int | None
) -> Command:
    """The read op for ``(count, block_ms)``, reused while they stay the same (the common case)."""
    if st.read_key != (count, block_ms):
        st.read_op = _read_op(spec, cfg, count, block_ms)
        st.read_key = (count, block_ms)
    return st.read_op  # type: ignore[return-value]  # set above (no cast(): a call per batch)


def _take_claim(st: ConsumerState, res: ClaimResult, recovered: bool) -> Delivery:
    st.stats.dead_lettered += len(res.dead)
    st.stats.gone += len(res.gone)
    n = len(res.delivery.entries)
    if recovered:
        st.stats.recovered += n
    else:
        st.stats.reclaimed += n
    st.stats.delivered += n
    return res.delivery


def _promote_op(spec: StreamSpec) -> Flow[Script]:
    t = yield from trim(spec)
    args = (PROMOTE_BATCH, *(t or ("", "", "")))
    return Script(load("stream_promote"), keys=(spec.key, spec.delayed), args=args)


def next_batch(
    spec: StreamSpec,
    cfg: ConsumerConfig,
    st: ConsumerState,
    count: int | None = None,
    block: float | None = None,
) -> Flow[Delivery]:
    """The next entries for this consumer, in order of urgency.

    1. its own pending entries (after a start or a lost reply), at once, without waiting;
    2. idle entries of other consumers, when the reclaim timer is due (traffic or not);
    3. new entries, blocking up to ``block`` s in slices no longer than ``cfg.block_cap`` (below the
       client's socket timeout), no later than the next reclaim or delayed entry; locally acked
       ids, and the move of delayed entries that are due, ride in the same pipeline.
    """
    count = cfg.count if count is None else count
    block = cfg.block if block is None else block
    if not st.group_ready:
        yield from ensure_group(spec, cfg, st)
    if st.recovering:
        try:
            res = yield from claim(spec, cfg, "own", st.own_cursor, st)
        except Exception as exc:
            _check_group(spec, cfg, st, exc)
            raise
        st.own_cursor = res.cursor
        if res.cursor == "0-0":
            st.recovering = False
        if res.delivery.entries or res.dead or res.gone:
            return _take_claim(st, res, recovered=True)
    now = yield _NOW
    deadline = now + block
    while True:
        if now >= st.next_reclaim:
            try:
                res = yield from claim(spec, cfg, "idle", st.reclaim_cursor, st)
            except Exception as exc:
                _check_group(spec, cfg, st, exc)
                raise
            st.reclaim_cursor = res.cursor
            if res.cursor == "0-0":  # a full pass: wait for the timer
                st.next_reclaim = now + cfg.reclaim_interval
            if res.delivery.entries:
                return _take_claim(st, res, recovered=False)
            _take_claim(st, res, recovered=False)
        promote = now >= st.next_promote
        if block <= 0 or st.full:  # (a full last batch: more are likely there, no need to wait)
            block_ms = None
        else:
            wait = min(deadline - now, cfg.block_cap, max(0.0, st.next_reclaim - now))
            if not promote:
                wait = min(wait, st.next_promote - now)
            block_ms = _block_ms(wait)
        read = _cached_read(spec, cfg, st, count, block_ms)
        acks = st.acks
        try:
            if promote:
                moved, reply = yield from _after_acks(spec, cfg, st, (yield from _promote_op(spec)), read)
                n, due_in_ms = int(moved[0]), int(moved[1])
                st.stats.promoted += n
                soon = cfg.delayed_poll if due_in_ms < 0 else min(cfg.delayed_poll, due_in_ms / 1000)
                st.next_promote = now + soon
            elif acks:  # _after_acks inlined: the acks of the last batch, then the read (one pipeline)
                xack = trusted_command(("XACK", spec.key, cfg.group, *acks))  # routed by its key
                reply = (yield trusted_batch((xack, read)))[1]
                st.acks = []
                st.stats.acked += len(acks)
            else:
                reply = yield read
        except Exception as exc:
            _check_group(spec, cfg, st, exc)
            raise
        if reply:
            entries = reply[0][1]
            if entries:
                n = len(entries)
                st.full = n >= count
                st.stats.delivered += n
                return Delivery(entries)
        st.full = False
        now = yield _NOW
        if block <= 0 or now >= deadline or st.stopping:
            return Delivery([])


def reclaim(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState) -> Flow[Delivery]:
    """Reclaim now (not waiting for the timer): scan the pending list from its start until
    entries are taken or the scan ends (dropping ids trimmed from the stream on the way)."""
    yield from ensure_group(spec, cfg, st)
    cursor = "0-0"
    while True:
        res = yield from claim(spec, cfg, "idle", cursor, st)
        delivery = _take_claim(st, res, recovered=False)
        cursor = res.cursor
        if delivery.entries or cursor == "0-0":
            return delivery


def prune_consumers(spec: StreamSpec, cfg: ConsumerConfig, idle: float) -> Flow[list[str]]:
    """Delete the group's consumers with nothing pending and idle for ``idle`` s (not this one)."""
    yield from ensure_group(spec, cfg)
    names = yield Script(
        load("stream_prune"), keys=(spec.key,), args=(cfg.group, max(0, round(idle * 1000)), cfg.name)
    )
    return [as_str(n) for n in names]


OnError = Callable[[BaseException, Any], Any]


def _failed(
    spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, m: BaseMessage, exc: BaseException,
    on_error: OnError | None, retry: dict[Any, float],
) -> Flow[None]:  # fmt: skip
    """One handler failure: log it, tell ``on_error``, then dead-letter it or plan its retry."""
    st.stats.failed += 1
    dead = settle(cfg, m.delivery_count) == "dead"
    log.warning(
        "stream %s group %s: handler failed on entry %s (delivery %d of %s), %s: %s",
        spec.key, cfg.group, m.id, m.delivery_count, cfg.max_deliveries or "unlimited",
        "dead-lettering it" if dead else "will retry", error_text(exc), exc_info=exc,
    )  # fmt: skip
    if on_error is not None:
        try:
            yield Compute(on_error, (exc, m))
        except Exception:  # a failing hook must not stop the worker
            log.exception("stream %s: on_error hook failed on entry %s", spec.key, m.id)
    if dead:
        if (yield from dead_letter(spec, cfg, m.id, error_text(exc), cfg.name)):
            st.stats.dead_lettered += 1
    else:
        retry[m.id] = cfg.retry.delay(m.delivery_count)


def settle_batch(
    spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, msgs: Sequence[BaseMessage],
    outcomes: Sequence[Any], on_error: OnError | None = None,
) -> Flow[int]:  # fmt: skip
    """After the handler ran over a batch: queue acks, retry or dead-letter failures, release the
    entries never started (a stop); the number of entries handled."""
    n = len(msgs)
    if outcomes.count(None) == n:  # the common case: ack all the loop still owns
        st.acks += [m.id for m in msgs if not m.settled]
        return n
    retry: dict[Any, float] = {}
    unrun: list[Any] = []
    acks = st.acks
    ran = 0
    for m, out in zip(msgs, outcomes, strict=True):
        if out is NOT_RUN:
            if not m.settled:
                m.settled = True
                unrun.append(m.id)
            continue
        ran += 1
        if m.settled:
            continue
        m.settled = True
        if out is None:
            acks.append(m.id)
        else:
            yield from _failed(spec, cfg, st, m, out, on_error, retry)
    if retry:
        st.stats.retried += yield from nack_each(spec, cfg, retry)
    if unrun:
        yield from release(spec, cfg, st, unrun)
    return ran


def release(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, ids: Sequence[Any]) -> Flow[int]:
    """Hand back entries this consumer took but will not process (shutdown): claimable at once."""
    n = yield from nack(spec, cfg, ids, delay=-1)
    st.stats.released += n
    return n


def flush(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState) -> Flow[int]:
    """Send the locally queued acks now."""
    acks, st.acks = st.acks, []
    if not acks:
        return 0
    yield Command("XACK", spec.key, cfg.group, *acks, keys=(spec.key,))
    st.stats.acked += len(acks)
    return len(acks)


def work(
    spec: StreamSpec,
    cfg: ConsumerConfig,
    st: ConsumerState,
    handler: Callable[[Any], Any],
    wrap: Callable[[Delivery], list[BaseMessage]],
    *,
    key: Callable[[Any], Hashable] | None = None,
    on_error: OnError | None = None,
    until_idle: float | None = None,
    max_messages: int | None = None,
) -> Flow[ConsumerStats]:
    """The worker loop: read, run ``handler`` over each batch (``wrap`` makes the shell's messages;
    ``cfg.concurrency`` calls at a time, one at a time per ``key``), settle. ``wrap`` may return
    the same list, filled again, batch after batch: the handler op is then made once.

    Stops when ``st.stopping`` is set (checked between batches, block slices and handler calls),
    after ``until_idle`` seconds without entries, or after ``max_messages``. On the way out it
    acks what was handled and releases what was taken but not handled.
    """
    idle_since: float | None = None
    handled = 0
    stop = st.stop_flag  # non-empty once a stop is asked: the runner reads it before each call
    each: ComputeEach | None = None
    while not stop:
        try:
            delivery = yield from next_batch(spec, cfg, st)
            st.errors_in_row = 0
            if not delivery.entries:
                now = yield _NOW
                if until_idle is not None:
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= until_idle:
                        break
                continue
            idle_since = None
            msgs = wrap(delivery)
            st.settled_by_hand = False
            if each is None or each.items is not msgs:  # the op is made again for a new list only
                each = ComputeEach(handler, msgs, cfg.concurrency, key, stop)
            outcomes = yield each
            if outcomes.count(None) == len(msgs):  # all returned: settle_batch's fast path, inlined
                if st.settled_by_hand:
                    st.acks += [m.id for m in msgs if not m.settled]
                else:  # no message was settled by hand: every id of the reply
                    st.acks += map(_first, delivery.entries)
                done = len(msgs)
            else:
                st.settled_by_hand = True  # settle_batch marks messages settled
                done = yield from settle_batch(spec, cfg, st, msgs, outcomes, on_error)
        except StreamError:  # the group vanished: the next round creates it again
            st.stats.read_errors += 1
            st.errors_in_row += 1
            yield Sleep(error_backoff(st.errors_in_row))
            continue
        except cfg.transient as exc:
            st.stats.read_errors += 1
            st.errors_in_row += 1
            st.recovering = True  # a lost reply may have delivered entries to us
            st.own_cursor = "0-0"
            st.group_ready = False
            pause = error_backoff(st.errors_in_row)
            log.warning("stream %s: connection error (%s), retrying in %.2fs", spec.key, exc, pause)
            yield Sleep(pause)
            continue
        handled += done
        if max_messages is not None and handled >= max_messages:
            break
    yield from flush(spec, cfg, st)
    st.stopping = False  # a stop() is consumed by the run it ended (or the run it preceded)
    return st.stats
