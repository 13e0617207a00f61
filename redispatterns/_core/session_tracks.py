"""Session tracks and summaries (seed S3), pure: flows over the session's own keys.

*Tracks* are named timelines per session. All tracks of a session live in one ZSET beside the
session (``ks:sess:{<id>}:tr``, the session's hash tag) at score 0, ordered by member::

    <track> NUL <server time, 16 digits of microseconds> NUL <12-digit sequence> NUL <event>

so one track is one lexicographic range, time-ordered, and a time range is a sub-range: both
are ``ZRANGEBYLEX`` calls, ``O(log N + M)``. Appends check that the session is alive, trim the
track to ``track_limit`` and expire the key at the session's absolute deadline; ``rotate`` moves
the key and ``destroy`` deletes it (``SessionConfig.tracks``).

*Summaries* are kept in the session hash (``s:<filter key>`` = the encoded summary,
``st:<filter key>`` = ``<stored at ms>:<events covered>``), so they rotate, die and expire
with the session without any bookkeeping. A summary job reads the event log, hands it to the
user's summarizer (a :class:`~redispatterns._core.ops.Compute`: the runtime wraps it with the
timeout) and stores the result only if the session is still alive and no job that read later
events (by the append count) stored its summary first. The *policy*
(:func:`due`) runs a job every ``every`` appended events, counted in the session hash by the
append's own script (``session_event`` with its counting flag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .codec import as_bytes, as_str
from .ops import Batch, Command, Compute, Flow, Script
from .scripts import load
from .session import DOWN, SessionConfig, check_token, decode_events, event_blob, guarded

__all__ = [
    "MAX_TRACK",
    "SessionSummary",
    "TrackEvent",
    "append_counted",
    "append_track",
    "check_filter",
    "check_track",
    "due",
    "summarize",
    "summary",
    "time_us",
    "track",
]

MAX_TRACK = 200
_SEP = b"\x00"


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One event of a track: the server time it was appended at (seconds since the epoch)."""

    time: float
    event: Any


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A stored summary: the summarizer's result, when it was stored, how many events it covers."""

    value: Any
    created: float
    events: int


def check_track(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a track name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_TRACK or "\x00" in name or "\x01" in name:
        raise ValueError(f"a track name is 1..{MAX_TRACK} characters without NUL/SOH bytes, got {name!r:.60}")
    return name


def check_filter(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a summary filter key must be a str, not {type(key).__name__}")
    if len(key) > MAX_TRACK:
        raise ValueError(f"a summary filter key is at most {MAX_TRACK} characters")
    return key


def time_us(name: str, value: object) -> int | None:
    """``since=`` / ``until=`` as integer microseconds: seconds since the epoch or a datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be an aware datetime (e.g. with tzinfo=timezone.utc)")
        return round(value.timestamp() * 1_000_000)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds since the epoch or a datetime, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return round(value * 1_000_000)


def _stamp(us: int) -> bytes:
    return b"%016d" % us


# --------------------------------------------------------------------------- tracks


def append_track(cfg: SessionConfig, token: object, name: str, event: Any, limit: int) -> Flow[int]:
    """Append ``event`` to track ``name``: the events kept in it, 0 when there is no session."""
    check_track(name)
    blob = cfg.codec.encode(event)
    tok = check_token(token)
    if tok is None:
        return 0
    sid = cfg.id_of(tok)
    reply = yield Script(
        load("session_track_add"),
        keys=(cfg.session_keys(sid)[0], cfg.track_key(sid)),
        args=(name, blob, limit),
    )
    return int(reply[0])


def track(
    cfg: SessionConfig,
    token: object,
    name: str,
    since_us: int | None = None,
    until_us: int | None = None,
    limit: int | None = None,
) -> Flow[list[TrackEvent]]:
    """Track ``name``'s events in ``[since, until]`` (inclusive), oldest first; with ``limit``,
    the newest ``limit`` of them. One round trip (a transaction: liveness and range)."""
    check_track(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise TypeError("limit must be an int or None")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if since_us is not None and until_us is not None and until_us < since_us:
        raise ValueError("until must not be before since")
    tok = check_token(token)
    if tok is None:
        return []
    sid = cfg.id_of(tok)
    h, tr = cfg.session_keys(sid)[0], cfg.track_key(sid)
    head = name.encode("utf-8", "surrogatepass") + _SEP
    lo = b"[" + head + (b"" if since_us is None else _stamp(since_us))
    hi = b"(" + (head[:-1] + b"\x01" if until_us is None else head + _stamp(until_us + 1))
    if limit is None:
        read = Command("ZRANGEBYLEX", tr, lo, hi, keys=(tr,))
    else:
        read = Command("ZREVRANGEBYLEX", tr, hi, lo, "LIMIT", 0, limit, keys=(tr,))
    reply = yield from guarded(cfg, Batch((Command("EXISTS", h, keys=(h,)), read), transaction=True))
    if reply is DOWN or not reply[0]:
        return []
    raw = reply[1]
    members = list(raw) if limit is None else list(reversed(raw))
    out = []
    for m in members:
        _, stamp, _, payload = as_bytes(m).split(_SEP, 3)
        out.append(TrackEvent(int(stamp) / 1_000_000, cfg.codec.decode(payload)))
    return out


# --------------------------------------------------------------------------- summaries


def due(count: int, every: int | None) -> bool:
    """Whether the append that brought the session to ``count`` events triggers a summary."""
    return every is not None and count > 0 and count % every == 0


def append_counted(cfg: SessionConfig, token: object, event: Any) -> Flow[tuple[int, int]]:
    """``append_event`` that also counts the append for the summary policy, in the same script:
    ``(events kept, appended-event count)``; ``(0, 0)`` when there is no session."""
    prepared = yield from event_blob(cfg, token, event)
    if prepared is None:
        return 0, 0
    sid, blob = prepared
    reply = yield Script(
        load("session_event"), keys=cfg.session_keys(sid)[:2], args=(blob, cfg.event_limit, "1")
    )
    if not isinstance(reply, list):
        return 0, 0
    return int(reply[0]), int(reply[1])


def summarize(
    cfg: SessionConfig, token: str, filter_key: str, call: Callable[..., Any], timeout: float | None = None
) -> Flow[bool]:
    """One summary job: read the events, ``call(events, filter_key)`` (at most ``timeout`` seconds:
    the runner throws ``TimeoutError`` past it), store the result.

    False when there is no session (or no event), or when a job that read later events has
    stored its summary already (jobs may finish out of order); errors of ``call`` (a timeout
    too) propagate.
    """
    tok = check_token(token)
    if tok is None:
        return False
    sid = cfg.id_of(tok)
    h, ev, _ = cfg.session_keys(sid)
    alive, count, raw = yield Batch(
        (
            Command("EXISTS", h, keys=(h,)),
            Command("HGET", h, "_n", keys=(h,)),
            Command("LRANGE", ev, 0, cfg.event_limit - 1, keys=(ev,)),
        ),
        transaction=True,
    )
    if not alive or not raw:
        return False
    evs = decode_events(cfg, raw)
    result = yield Compute(call, (evs, filter_key), timeout=timeout)
    stored = yield Script(
        load("session_summary_set"),
        keys=(h,),
        args=(filter_key, cfg.codec.encode(result), len(evs), int(count or 0)),
    )
    return int(stored) > 0


def summary(cfg: SessionConfig, token: object, filter_key: str) -> Flow[SessionSummary | None]:
    """The stored summary for ``filter_key``, or ``None``."""
    check_filter(filter_key)
    tok = check_token(token)
    if tok is None:
        return None
    h = cfg.session_keys(cfg.id_of(tok))[0]
    reply = yield from guarded(cfg, Command("HMGET", h, "s:" + filter_key, "st:" + filter_key, keys=(h,)))
    if reply is DOWN:
        return None
    value, stamp = reply
    if value is None:
        return None
    at, n, *_ = [*as_str(stamp or b"0:0").split(":"), "0"]
    return SessionSummary(cfg.codec.decode(as_bytes(value)), int(at) / 1000, int(n or 0))
