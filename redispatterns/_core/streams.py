"""Streams with consumer groups: the flows and the worker loop's decisions, written once.

Keys of one stream share its hash tag (``<prefix>stream:{name}``): the stream itself, its
dead-letter stream (``...:dlq``) and its idempotency markers (``...:idem:<key>``), so every
script touching several of them runs on one Cluster slot.

Delivery counts follow the server (measured on Redis 7.0 and Valkey 8.1): ``XREADGROUP >`` sets 1,
every claim that returns the body (XAUTOCLAIM, XCLAIM, re-reading own pending) adds 1, and the
nack polyfill (``XCLAIM ... IDLE n JUSTID``) adds nothing. A handler failure on delivery
``max_deliveries`` moves the entry to the dead-letter stream; an entry claimed with a count beyond
``max_deliveries`` (its consumer died while handling it) is moved without running the handler again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StreamError
from .codec import Codec, as_bytes, as_str
from .keys import Keyspace
from .ops import Arg, Batch, Command, Compute, Flow, Now, Script, Sleep, WallClock
from .scripts import load

__all__ = [
    "RESERVED_PREFIX",
    "BaseMessage",
    "BatchResult",
    "ClaimResult",
    "ConsumerConfig",
    "ConsumerState",
    "ConsumerStats",
    "DeadLetter",
    "Delivery",
    "StreamStats",
    "StreamSpec",
    "ack",
    "add",
    "add_many",
    "backoff",
    "block_cap",
    "claim",
    "dead_letter",
    "dead_letters",
    "delete",
    "encode_fields",
    "ensure_group",
    "flush",
    "length",
    "metrics",
    "nack",
    "next_batch",
    "prune_consumers",
    "reclaim",
    "release",
    "settle",
    "settle_batch",
    "trim_acked",
    "trim_args",
    "work",
]

RESERVED_PREFIX = "rp:"  # dead-letter metadata fields; user field names may not start with it
KIND = "stream"
_MAX_DLQ_ERROR = 2000  # characters of the last error kept in a dead letter
_RELEASED_IDLE_MS = 86_400_000  # released entries look idle for a day: any consumer's reclaim takes them


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream's keys and retention. Built by the shells, pure."""

    name: str
    keyspace: Keyspace
    trim: tuple[Arg, ...] = ()  # ("MAXLEN", "~", 1000) / ("MINID", "~", "123-0") / ()
    max_age_ms: int | None = None  # MINID trimming relative to the producer's clock
    key: str = field(init=False)
    dlq: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.keyspace.tagged(KIND, self.name))
        object.__setattr__(self, "dlq", self.keyspace.tagged(KIND, self.name, "dlq"))

    def marker(self, idempotency_key: str) -> str:
        return self.keyspace.tagged(KIND, self.name, "idem", idempotency_key)


def trim_args(maxlen: int | None, minid: str | None, approximate: bool) -> tuple[Arg, ...]:
    """XADD trim arguments; validates ``maxlen`` / ``minid`` (at most one)."""
    if maxlen is not None and minid is not None:
        raise ValueError("pass maxlen= or minid=, not both")
    mark = "~" if approximate else "="
    if maxlen is not None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int):
            raise TypeError(f"maxlen must be an int, not {type(maxlen).__name__}")
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        return ("MAXLEN", mark, maxlen)
    if minid is not None:
        if not isinstance(minid, str) or not minid:
            raise TypeError("minid must be a stream id such as '1700000000000-0'")
        return ("MINID", mark, minid)
    return ()


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
    retry_delay: float = 0.0
    start: str = "0"
    dlq_maxlen: int = 10000
    delete_dead: bool = False
    block_cap: float = 4.0  # longest single BLOCK: below the client's socket timeout
    # entries coming back (reclaimed, or own pending after a restart) are taken this many at a
    # time: each claim adds a delivery to every entry it takes, so taking one at a time charges a
    # process-killing entry's crashes to that entry alone, not to the rest of its batch
    reclaim_count: int = 1
    transient: tuple[type[BaseException], ...] = ()  # errors after which the loop backs off

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


@dataclass
class ConsumerState:
    """The mutable state of one consumer; shells set ``stopping`` to ask the loop to finish."""

    group_ready: bool = False
    recovering: bool = True  # re-read own pending entries first (after start or a lost reply)
    own_cursor: str = "0-0"
    reclaim_cursor: str = "0-0"
    next_reclaim: float = 0.0
    stopping: bool = False
    acks: list[Any] = field(default_factory=list)  # ids acked locally, sent with the next read
    errors_in_row: int = 0
    stats: ConsumerStats = field(default_factory=ConsumerStats)


class BaseMessage:
    """An entry delivered to a consumer: ``id``, ``fields`` (decoded lazily), ``delivery_count``."""

    __slots__ = ("_codec", "_decoded", "_id", "_owner", "delivery_count", "raw", "settled")

    def __init__(
        self, mid: Any, raw: Mapping[Any, Any], delivery_count: int, codec: Codec, owner: Any = None
    ) -> None:
        self._id = mid
        self._owner = owner
        self.raw = raw
        self.delivery_count = delivery_count
        self._codec = codec
        self.settled = False  # acked, nacked or dead-lettered already (by the handler or the loop)

    @property
    def id(self) -> str:
        return as_str(self._id)

    @property
    def fields(self) -> dict[str, Any]:
        """The entry's fields decoded with the stream's codec (``DecodeError`` if one does not)."""
        try:
            return self._decoded
        except AttributeError:  # first access: decode once (the slot starts unset, which is cheap)
            dec = self._codec.decode
            self._decoded: dict[str, Any] = {as_str(k): dec(v) for k, v in self.raw.items()}
            return self._decoded

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} deliveries={self.delivery_count}>"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A batch of entries: ``(id, fields)`` pairs; ``counts`` is ``None`` when all are first deliveries."""

    entries: Sequence[tuple[Any, Mapping[Any, Any]]]
    counts: Sequence[int] | None = None

    def count_of(self, i: int) -> int:
        return 1 if self.counts is None else self.counts[i]


@dataclass
class BatchResult:
    """What the shell's handler loop reports: the messages it ran and the failures by index."""

    messages: list[BaseMessage]
    failures: dict[int, BaseException]


@dataclass(frozen=True, slots=True)
class ClaimResult:
    cursor: str
    delivery: Delivery
    gone: tuple[str, ...]
    dead: int


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of one stream and group (one round trip, one consistent view)."""

    length: int
    group_exists: bool
    pending: int
    lag: int | None  # entries not yet delivered to the group; None when the server cannot tell
    oldest_pending_id: str | None
    oldest_pending_age: float  # seconds since the oldest pending entry was added (0 when none)
    oldest_pending_idle: float  # seconds since it was last delivered
    dead_letters: int
    consumers: int
    last_delivered_id: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    dlq_id: str
    id: str
    group: str
    consumer: str
    deliveries: int
    error: str
    dead_at: float  # server time, seconds since the epoch
    raw: dict[str, bytes]
    fields: dict[str, Any]
    missing: bool  # the original entry had been trimmed or deleted before the move


# --------------------------------------------------------------------------- pure helpers


def encode_fields(fields: Mapping[str, Any], codec: Codec) -> list[Arg]:
    """``[f1, v1, f2, v2, ...]`` with values through ``codec``; validates names."""
    if type(fields) is not dict and not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping of str to values, not {type(fields).__name__}")
    if not fields:
        raise ValueError("a stream entry needs at least one field")
    out: list[Arg] = []
    for k, v in fields.items():
        if not isinstance(k, str):
            raise TypeError(f"field names must be str, not {type(k).__name__}")
        if not k or k.startswith(RESERVED_PREFIX):
            raise ValueError(f"field name {k!r} is empty or starts with the reserved {RESERVED_PREFIX!r}")
        out.append(k)
        out.append(codec.encode(v))
    return out


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def block_cap(socket_timeout: float | None) -> float:
    """The longest single ``BLOCK`` (s) that a client with this socket timeout survives."""
    if socket_timeout is None or socket_timeout <= 0:
        return 30.0
    margin = max(0.25, 0.2 * socket_timeout)
    return max(0.005, socket_timeout - margin)


def backoff(errors_in_row: int) -> float:
    """Seconds to wait after ``errors_in_row`` consecutive connection errors (capped)."""
    return float(min(2.0, 0.05 * (2 ** max(0, errors_in_row - 1))))


def settle(cfg: ConsumerConfig, delivery_count: int) -> str:
    """After a handler failure: ``"dead"`` (dead-letter now) or ``"retry"``."""
    if cfg.max_deliveries and delivery_count >= cfg.max_deliveries:
        return "dead"
    return "retry"


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


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_DLQ_ERROR]


# --------------------------------------------------------------------------- producer flows


def _trim(spec: StreamSpec) -> Flow[tuple[Arg, ...]]:
    if spec.max_age_ms is None:
        return spec.trim
    now = yield WallClock()
    return ("MINID", "~", f"{max(0, int(now * 1000) - spec.max_age_ms)}-0")


def add(
    spec: StreamSpec, payload: list[Arg], *, idempotency_key: str | None = None, ttl_ms: int = 86_400_000
) -> Flow[str]:
    """XADD one entry; with ``idempotency_key`` a duplicate returns the first id (one script)."""
    trim = spec.trim if spec.max_age_ms is None else (yield from _trim(spec))
    if idempotency_key is None:
        reply = yield Command("XADD", spec.key, *trim, "*", *payload, keys=(spec.key,), retryable=False)
        return as_str(reply)
    marker = spec.marker(idempotency_key)
    t: tuple[Arg, ...] = trim or ("", "", "")
    reply = yield Script(load("stream_add"), keys=(spec.key, marker), args=(ttl_ms, *t, *payload))
    return as_str(reply[0])


def add_many(spec: StreamSpec, payloads: Sequence[list[Arg]]) -> Flow[list[str]]:
    """XADD several entries in one pipeline (not idempotent: a lost reply is not retried)."""
    if not payloads:
        return []
    trim = yield from _trim(spec)
    ops = tuple(Command("XADD", spec.key, *trim, "*", *p, keys=(spec.key,)) for p in payloads)
    replies = yield Batch(ops)
    return [as_str(r) for r in replies]


def length(spec: StreamSpec) -> Flow[int]:
    return int((yield Command("XLEN", spec.key)))


def delete(spec: StreamSpec) -> Flow[int]:
    """Delete the stream and its dead-letter stream (markers expire on their own)."""
    return int((yield Command("DEL", spec.key, spec.dlq, keys=(spec.key, spec.dlq))))


def trim_acked(spec: StreamSpec, approximate: bool = True) -> Flow[int]:
    """Remove entries every group has read and acked (never pending or unread ones); the count."""
    n = yield Script(load("stream_trim_acked"), keys=(spec.key,), args=("~" if approximate else "=",))
    return int(n)


def dead_letters(spec: StreamSpec, codec: Codec, count: int, start: str = "-") -> Flow[list[DeadLetter]]:
    """The oldest ``count`` dead letters from ``start`` (an id of the dead-letter stream)."""
    rows = yield Command("XRANGE", spec.dlq, start, "+", "COUNT", count)
    out: list[DeadLetter] = []
    for dlq_id, raw in rows or ():
        meta: dict[str, str] = {}
        body: dict[str, bytes] = {}
        for k, v in raw.items():
            ks = as_str(k)
            if ks.startswith(RESERVED_PREFIX):
                meta[ks[len(RESERVED_PREFIX) :]] = as_str(v)
            else:
                body[ks] = as_bytes(v)
        fields: dict[str, Any] = {}
        for k, v in body.items():
            try:
                fields[k] = codec.decode(v)
            except Exception:
                fields[k] = v
        out.append(
            DeadLetter(
                dlq_id=as_str(dlq_id),
                id=meta.get("id", ""),
                group=meta.get("group", ""),
                consumer=meta.get("consumer", ""),
                deliveries=int(meta.get("deliveries", "0") or 0),
                error=meta.get("error", ""),
                dead_at=int(meta.get("dead_us", "0") or 0) / 1e6,
                raw=body,
                fields=fields,
                missing=meta.get("missing") == "1",
            )
        )
    return out


def metrics(spec: StreamSpec, group: str) -> Flow[StreamStats]:
    """Length, lag, pending, oldest pending age, dead letters: one read-only script."""
    r = yield Script(load("stream_metrics"), keys=(spec.key, spec.dlq), args=(group,))
    length_, exists, pending, lag, oldest, idle, now_ms, dead, consumers, last = r
    oldest_s = as_str(oldest) if oldest else None
    age = 0.0
    if oldest_s:
        age = max(0.0, (int(now_ms) - int(oldest_s.split("-", 1)[0])) / 1000)
    return StreamStats(
        length=int(length_),
        group_exists=bool(int(exists)),
        pending=int(pending),
        lag=None if int(lag) < 0 else int(lag),
        oldest_pending_id=oldest_s,
        oldest_pending_age=age,
        oldest_pending_idle=int(idle) / 1000,
        dead_letters=int(dead),
        consumers=int(consumers),
        last_delivered_id=as_str(last) if last else None,
    )


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
    return ClaimResult(as_str(cursor), Delivery(entries, counts), tuple(as_str(g) for g in gone), int(dead))


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
        return _parse_claim((yield script))
    return _parse_claim((yield from _after_acks(spec, cfg, st, script)))


def _after_acks(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, op: Command | Script) -> Flow[Any]:
    """``op``'s reply; the acks queued in ``st`` go first in the same round trip (one pipeline,
    one slot). They stay queued until that round trip succeeds (a repeated XACK is harmless)."""
    if not st.acks:
        return (yield op)
    acks = st.acks
    replies = yield Batch((Command("XACK", spec.key, cfg.group, *acks, keys=(spec.key,)), op))
    st.acks = []
    st.stats.acked += len(acks)
    return replies[1]


def ack(spec: StreamSpec, group: str, ids: Sequence[Any]) -> Flow[int]:
    if not ids:
        return 0
    return int((yield Command("XACK", spec.key, group, *ids, keys=(spec.key,))))


def nack(spec: StreamSpec, cfg: ConsumerConfig, ids: Sequence[Any], delay: float = 0.0) -> Flow[int]:
    """Release own entries: any consumer's reclaim may take them after ``delay`` seconds.

    The delivery count is unchanged (XCLAIM ... IDLE JUSTID, the pre-8.8 polyfill of XNACK): the
    entry's idle time is set to ``min_idle - delay``, so consumers with this ``min_idle`` reclaim
    it after ``delay``; a negative ``delay`` makes it look idle for a day (claimable by anyone).
    """
    if not ids:
        return 0
    idle = _RELEASED_IDLE_MS if delay < 0 else max(0, cfg.min_idle_ms - round(delay * 1000))
    n = yield Script(load("stream_nack"), keys=(spec.key,), args=(cfg.group, cfg.name, idle, *ids))
    return int(n)


def dead_letter(spec: StreamSpec, cfg: ConsumerConfig, mid: Any, error: str, owner: str = "") -> Flow[int]:
    """Move one pending entry to the dead-letter stream and ack it (atomic); its delivery count, or 0."""
    n = yield Script(
        load("stream_dead_letter"),
        keys=(spec.key, spec.dlq),
        args=(cfg.group, mid, owner, error[:_MAX_DLQ_ERROR], cfg.dlq_maxlen, 1 if cfg.delete_dead else 0),
    )
    return int(n)


def _read_op(spec: StreamSpec, cfg: ConsumerConfig, count: int, block_ms: int | None) -> Command:
    args: list[Arg] = ["XREADGROUP", "GROUP", cfg.group, cfg.name, "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    args += ["STREAMS", spec.key, ">"]
    return Command(*args, keys=(spec.key,))


def _take_claim(st: ConsumerState, res: ClaimResult, recovered: bool) -> Delivery:
    st.stats.dead_lettered += res.dead
    st.stats.gone += len(res.gone)
    n = len(res.delivery.entries)
    if recovered:
        st.stats.recovered += n
    else:
        st.stats.reclaimed += n
    st.stats.delivered += n
    return res.delivery


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
       client's socket timeout) and no later than the next reclaim; locally acked ids ride along
       in the same pipeline.
    """
    count = cfg.count if count is None else count
    block = cfg.block if block is None else block
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
    now = yield Now()
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
        wait = min(deadline - now, cfg.block_cap, max(0.0, st.next_reclaim - now))
        block_ms = None if block <= 0 else max(1, round(wait * 1000))
        read = _read_op(spec, cfg, count, block_ms)
        try:
            reply = yield from _after_acks(spec, cfg, st, read)
        except Exception as exc:
            _check_group(spec, cfg, st, exc)
            raise
        if reply:
            entries = reply[0][1]
            if entries:
                st.stats.delivered += len(entries)
                return Delivery(entries)
        now = yield Now()
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


def settle_batch(spec: StreamSpec, cfg: ConsumerConfig, st: ConsumerState, res: BatchResult) -> Flow[None]:
    """After the handler ran over a batch: queue acks, retry or dead-letter failures."""
    failures = res.failures
    if not failures:  # the common case: ack all the loop still owns
        st.acks += [m._id for m in res.messages if not m.settled]
        return
    retry: list[Any] = []
    acks = st.acks
    for i, m in enumerate(res.messages):
        if m.settled:
            continue
        m.settled = True
        if i in failures:
            st.stats.failed += 1
            if settle(cfg, m.delivery_count) == "dead":
                n = yield from dead_letter(spec, cfg, m._id, _error_text(failures[i]), cfg.name)
                if n:
                    st.stats.dead_lettered += 1
            else:
                retry.append(m._id)
        else:
            acks.append(m._id)
    if retry:
        st.stats.retried += yield from nack(spec, cfg, retry, cfg.retry_delay)


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
    call_batch: Callable[[Delivery], Any],
    *,
    until_idle: float | None = None,
    max_messages: int | None = None,
) -> Flow[ConsumerStats]:
    """The worker loop: read, run the handler over each batch (``call_batch``, the shell's), settle.

    Stops when ``st.stopping`` is set (checked between batches and block slices), after
    ``until_idle`` seconds without entries, or after ``max_messages``. On the way out it acks
    what was handled and releases what was taken but not handled.
    """
    idle_since: float | None = None
    handled = 0
    while not st.stopping:
        try:
            delivery = yield from next_batch(spec, cfg, st)
            st.errors_in_row = 0
            if not delivery.entries:
                now = yield Now()
                if until_idle is not None:
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= until_idle:
                        break
                continue
            idle_since = None
            res: BatchResult = yield Compute(call_batch, (delivery,))
            yield from settle_batch(spec, cfg, st, res)
            done = len(res.messages)
            if done < len(delivery.entries):
                yield from release(spec, cfg, st, [e[0] for e in delivery.entries[done:]])
        except StreamError:  # the group vanished: the next round creates it again
            st.stats.read_errors += 1
            st.errors_in_row += 1
            yield Sleep(backoff(st.errors_in_row))
            continue
        except cfg.transient:
            st.stats.read_errors += 1
            st.errors_in_row += 1
            st.recovering = True  # a lost reply may have delivered entries to us
            st.own_cursor = "0-0"
            st.group_ready = False
            yield Sleep(backoff(st.errors_in_row))
            continue
        handled += done
        if max_messages is not None and handled >= max_messages:
            break
    yield from flush(spec, cfg, st)
    st.stopping = False  # a stop() is consumed by the run it ended (or the run it preceded)
    return st.stats
