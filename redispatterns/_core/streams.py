"""Streams: keys, retention and the producer side (add, delayed add, dead letters, metrics).

Keys of one stream share its hash tag (``<prefix>stream:{name}``): the stream itself, its
dead-letter stream (``...:dlq``), its idempotency markers (``...:idem:<key>``) and its delayed
entries (``...:delayed``, a sorted set by due time, and ``...:delayed:seq``), so every script
touching several of them runs on one Cluster slot. The consumer side is in
:mod:`redispatterns._core.stream_consumer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import Codec, as_bytes, as_str
from .keys import Keyspace
from .ops import Arg, Batch, Command, Flow, Script, WallClock
from .scripts import load

__all__ = [
    "RESERVED_PREFIX",
    "DeadLetter",
    "StreamStats",
    "StreamSpec",
    "add",
    "add_delayed",
    "add_many",
    "dead_letters",
    "delete",
    "encode_fields",
    "length",
    "metrics",
    "pack_fields",
    "trim",
    "trim_acked",
    "trim_args",
]

RESERVED_PREFIX = "rp:"  # dead-letter metadata fields; user field names may not start with it
KIND = "stream"


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
    delayed: str = field(init=False)  # sorted set of entries waiting for their time, by due ms
    delayed_seq: str = field(init=False)  # the counter that names them

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.keyspace.tagged(KIND, self.name))
        object.__setattr__(self, "dlq", self.keyspace.tagged(KIND, self.name, "dlq"))
        object.__setattr__(self, "delayed", self.keyspace.tagged(KIND, self.name, "delayed"))
        object.__setattr__(self, "delayed_seq", self.keyspace.tagged(KIND, self.name, "delayed", "seq"))

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


_checked_names: set[str] = set()  # field names already validated (a bounded memo: names repeat)


def _check_field_name(k: object) -> None:
    if not isinstance(k, str):
        raise TypeError(f"field names must be str, not {type(k).__name__}")
    if not k or k.startswith(RESERVED_PREFIX):
        raise ValueError(f"field name {k!r} is empty or starts with the reserved {RESERVED_PREFIX!r}")
    if len(_checked_names) > 4096:
        _checked_names.clear()
    _checked_names.add(k)


def encode_fields(fields: Mapping[str, Any], codec: Codec) -> list[Arg]:
    """``[f1, v1, f2, v2, ...]`` with values through ``codec``; validates names."""
    if type(fields) is not dict and not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping of str to values, not {type(fields).__name__}")
    if not fields:
        raise ValueError("a stream entry needs at least one field")
    checked = _checked_names
    for k in fields:
        if k not in checked:
            _check_field_name(k)
    enc = codec.encode  # JsonCodec sends short values straight to orjson itself
    return [x for k, v in fields.items() for x in (k, enc(v))]


def trim(spec: StreamSpec) -> Flow[tuple[Arg, ...]]:
    """The XADD trim arguments now (``max_age`` is relative to the producer's clock)."""
    if spec.max_age_ms is None:
        return spec.trim
    now = yield WallClock()
    return ("MINID", "~", f"{max(0, int(now * 1000) - spec.max_age_ms)}-0")


def add(
    spec: StreamSpec, payload: list[Arg], *, idempotency_key: str | None = None, ttl_ms: int = 86_400_000
) -> Flow[str]:
    """XADD one entry; with ``idempotency_key`` a duplicate returns the first id (one script)."""
    t = spec.trim if spec.max_age_ms is None else (yield from trim(spec))
    if idempotency_key is None:
        reply = yield Command("XADD", spec.key, *t, "*", *payload, keys=(spec.key,), retryable=False)
        return as_str(reply)
    marker = spec.marker(idempotency_key)
    t = t or ("", "", "")
    reply = yield Script(load("stream_add"), keys=(spec.key, marker), args=(ttl_ms, *t, *payload))
    return as_str(reply[0])


ADD_MANY_CHUNK = 1000  # entries per script call: bounds how long one call holds the server


def _add_many_op(spec: StreamSpec, t: tuple[Arg, ...], payloads: Sequence[list[Arg]]) -> Script:
    args: list[Arg] = [*(t or ("", "", "")), len(payloads)]
    args += map(len, payloads)
    for p in payloads:
        args += p
    return Script(load("stream_add_many"), keys=(spec.key,), args=tuple(args))


def add_many(spec: StreamSpec, payloads: Sequence[list[Arg]]) -> Flow[list[str]]:
    """XADD several entries, in order, in one round trip (not idempotent: a lost reply is not
    retried). One script call per ``ADD_MANY_CHUNK`` entries: a single command carries them all,
    where a pipeline of XADDs costs the client a command's packing and reply handling per entry."""
    if not payloads:
        return []
    t = yield from trim(spec)
    step = ADD_MANY_CHUNK
    if len(payloads) <= step:
        ids = yield _add_many_op(spec, t, payloads)
    else:
        chunks = yield Batch(
            tuple(_add_many_op(spec, t, payloads[i : i + step]) for i in range(0, len(payloads), step))
        )
        ids = [i for chunk in chunks for i in chunk]
    return [r.decode() if type(r) is bytes else as_str(r) for r in ids]


def pack_fields(payload: Sequence[Arg]) -> bytes:
    """``<len>:<bytes>`` per field name and value: one string a Lua script can split again."""
    parts = []
    for a in payload:
        b = as_bytes(a if isinstance(a, (bytes, str)) else str(a))
        parts.append(b"%d:%s" % (len(b), b))
    return b"".join(parts)


def add_delayed(
    spec: StreamSpec,
    payload: list[Arg],
    *,
    delay_ms: int | None = None,
    due_ms: int | None = None,
    idempotency_key: str | None = None,
    ttl_ms: int = 86_400_000,
) -> Flow[str]:
    """Park an entry until ``delay_ms`` from now (server clock) or the epoch time ``due_ms``; the
    consumers' reads move it into the stream when due. Its id is ``delayed-<n>`` (the stream id
    comes with the move); with ``idempotency_key`` a duplicate returns the first id."""
    if (delay_ms is None) == (due_ms is None):
        raise ValueError("add_delayed takes one of delay_ms or due_ms")
    keys: tuple[str, ...] = (spec.delayed, spec.delayed_seq)
    if idempotency_key is not None:
        keys += (spec.marker(idempotency_key),)
    when = (-1 if delay_ms is None else delay_ms, -1 if due_ms is None else due_ms)
    reply = yield Script(load("stream_add_delayed"), keys=keys, args=(*when, ttl_ms, pack_fields(payload)))
    return as_str(reply[0])


def length(spec: StreamSpec) -> Flow[int]:
    return int((yield Command("XLEN", spec.key)))


def delete(spec: StreamSpec) -> Flow[int]:
    """Delete the stream, its dead-letter stream and its delayed entries (markers expire on their
    own); the number of keys deleted."""
    keys = (spec.key, spec.dlq, spec.delayed, spec.delayed_seq)
    return int((yield Command("DEL", *keys, keys=keys)))


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
