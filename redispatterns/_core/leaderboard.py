"""Leaderboards: pure flows, rank-mode rules, tie-break encoding and window bucket naming.

Keys of one board ``name`` all share the hash tag ``{name}`` (one Cluster slot)::

    <prefix>lb:{name}:z            the board (sorted set)
    <prefix>lb:{name}:data         member data (hash, values through the mount's codec)
    <prefix>lb:{name}:u / :uc      the distinct-score index (dense rank only): zset + counts hash
    <prefix>lb:{name}:day:<date>   window buckets (day / week starting Monday / month), with TTLs
    <prefix>lb:{name}:last<N>d:<date>:<agg>   a cached rolling union of the last N day buckets

Every update is one run of ``lua/leaderboard_submit.lua``; every read that returns entries is one
run of ``lua/leaderboard_read.lua`` (or one plain command where that is all it takes).

Tie-break ``"earliest"``: the stored score is the integer ``primary * 2**B + time_part`` where the
time part counts ticks since an epoch (``B`` bits), reversed for descending boards so that, among
equal primaries, the earliest to reach the score ranks first. It is exact while it stays inside
``[-2**53, 2**53)``; the primary is checked against that range before any write.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from ..errors import LeaderboardError, ScoreOutOfRange
from .bulk import decode_values, texts
from .codec import Codec, as_str
from .keys import Keyspace
from .ops import Batch, Command, Flow, Script, WallClock, trusted_script
from .scripts import load

__all__ = [
    "MAX_PAGE",
    "ORDERS",
    "RANK_MODES",
    "SUBMIT_MODES",
    "WINDOWS",
    "BoardSpec",
    "LeaderboardEntry",
    "LeaderboardError",
    "ScoreOutOfRange",
    "bucket_end_us",
    "bucket_id",
    "bucket_label",
    "decode_score",
    "encode_tiebreak",
    "percentile",
    "tiebreak_bounds",
]

Order = Literal["desc", "asc"]
RankMode = Literal["standard", "dense", "competition"]
SubmitMode = Literal["best", "latest", "incr"]
TieBreak = Literal["earliest"]
Rolling = Literal["best", "sum"]
Window = Literal["day", "week", "month"]
ORDERS = ("desc", "asc")
RANK_MODES = ("standard", "dense", "competition")
SUBMIT_MODES = ("best", "latest", "incr")
WINDOWS = ("day", "week", "month")
MAX_PAGE = 10_000  # entries per read: bounds the script's work and reply
DAY_US = 86_400_000_000
DEFAULT_RETENTION = {"day": 32 * 86400.0, "week": 5 * 7 * 86400.0, "month": 62 * 86400.0}
DEFAULT_TIEBREAK_EPOCH = _dt.datetime(2025, 1, 1, tzinfo=_dt.timezone.utc)
_MAX_BUCKET_RETRIES = 3


class LeaderboardEntry(NamedTuple):
    """One row of a board: ``rank`` is 1-based per the board's rank mode."""

    rank: int
    member: str
    score: float | int
    data: Any = None


# --------------------------------------------------------------------------- pure math


def tiebreak_bounds(time_bits: int) -> tuple[int, int]:
    """The primary scores a tie-broken board can hold: ``(lowest, highest)`` inclusive."""
    return -(2 ** (53 - time_bits)), 2 ** (53 - time_bits) - 1


def encode_tiebreak(score: int, time_part: int, *, order: str, time_bits: int) -> int:
    """``score * 2**B + time part`` (time reversed on descending boards); checked to stay exact."""
    lo, hi = tiebreak_bounds(time_bits)
    if not lo <= score <= hi:
        raise ScoreOutOfRange(
            f"score {score} is outside [{lo}, {hi}], the range a tie-broken board with "
            f"time_bits={time_bits} can store exactly (below 2**53); lower time_bits to widen it"
        )
    m = 1 << time_bits
    if not 0 <= time_part < m:
        raise ScoreOutOfRange(f"time part {time_part} is outside [0, 2**{time_bits})")
    return score * m + (m - 1 - time_part if order == "desc" else time_part)


def decode_score(
    stored: bytes | str | float | int | None, *, order: str, time_bits: int
) -> float | int | None:
    """A stored score back to the user's score (the primary of a tie-broken composite)."""
    if stored is None:
        return None
    value = float(as_str(stored)) if isinstance(stored, (bytes, str)) else float(stored)
    if time_bits == 0:
        return value + 0.0
    return int(value) >> time_bits


def decode_time_part(stored: int, *, order: str, time_bits: int) -> int:
    """The tick count of a tie-broken composite (when the member reached its score)."""
    m = 1 << time_bits
    r = stored % m
    return m - 1 - r if order == "desc" else r


def bucket_id(window: str, t_us: int) -> int:
    """The bucket of ``window`` holding instant ``t_us`` (µs since the epoch, UTC).

    day: days since 1970-01-01; week: weeks since Monday 1969-12-29; month: ``year * 12 + month - 1``.
    """
    day = t_us // DAY_US
    if window == "day":
        return day
    if window == "week":
        return (day + 3) // 7
    if window == "month":
        d = _dt.date(1970, 1, 1) + _dt.timedelta(days=day)
        return d.year * 12 + d.month - 1
    raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")


def _month_start_day(mid: int) -> int:
    y, m = divmod(mid, 12)
    return (_dt.date(y, m + 1, 1) - _dt.date(1970, 1, 1)).days


def bucket_start_us(window: str, bid: int) -> int:
    if window == "day":
        return bid * DAY_US
    if window == "week":
        return (bid * 7 - 3) * DAY_US
    return _month_start_day(bid) * DAY_US


def bucket_end_us(window: str, bid: int) -> int:
    """The first µs after bucket ``bid`` of ``window``."""
    return bucket_start_us(window, bid + 1)


def bucket_label(window: str, bid: int) -> str:
    """The readable key suffix of a bucket: ``day:2026-11-22``, ``week:2026-11-16``, ``month:2026-11``."""
    start = _dt.date(1970, 1, 1) + _dt.timedelta(days=bucket_start_us(window, bid) // DAY_US)
    if window == "month":
        return f"month:{start.year:04d}-{start.month:02d}"
    return f"{window}:{start.isoformat()}"


def percentile(total: int, worse: int) -> float:
    """The share (0-100) of the board's members ranked strictly worse than a member."""
    return 100.0 * worse / total if total else 0.0


def rolling_days(window: str) -> int | None:
    """``"7d"`` -> 7; a calendar window -> ``None``; anything else -> ``ValueError``."""
    if window in WINDOWS:
        return None
    if isinstance(window, str) and window.endswith("d") and window[:-1].isdigit():
        n = int(window[:-1])
        if 1 <= n <= 366:
            return n
    raise ValueError(
        f"window must be one of {', '.join(WINDOWS)} or a rolling '<N>d' (1 <= N <= 366), got {window!r}"
    )


# --------------------------------------------------------------------------- validation


def check_member(member: object) -> str:
    if not isinstance(member, str):
        raise TypeError(f"a leaderboard member must be a str, not {type(member).__name__}")
    if not member:
        raise ValueError("a leaderboard member cannot be empty")
    return member


def check_score(score: object, *, integer: bool, what: str = "score") -> float | int:
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise TypeError(f"{what} must be an int or float, not {type(score).__name__}")
    if isinstance(score, float) and not math.isfinite(score):
        raise ValueError(f"{what} must be finite, got {score}")
    if integer:
        if isinstance(score, float):
            if not score.is_integer():
                raise ValueError(f"a board with tie_break='earliest' stores integer scores; got {score}")
            score = int(score)
        return score
    if isinstance(score, int) and abs(score) > 2**53:
        raise ValueError(f"{what} {score} cannot be stored exactly as a double (|score| <= 2**53)")
    return float(score) + 0.0  # no negative zero


def check_count(n: object, what: str, *, lo: int = 1, hi: int = MAX_PAGE) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")
    if not lo <= n <= hi:
        raise ValueError(f"{what} must be in [{lo}, {hi}], got {n}")
    return n


# --------------------------------------------------------------------------- the board's spec


@dataclass(frozen=True)
class View:
    """Which sorted set a read looks at: the board, a bucket, or a rolling union (with its sources)."""

    key: str
    dense_index: bool
    sources: tuple[str, ...] = ()
    aggregate: str = "MAX"


@dataclass(frozen=True)
class BoardSpec:
    """Everything the flows need to know about one board (pure configuration)."""

    name: str
    keyspace: Keyspace
    codec: Codec
    order: str = "desc"
    rank_mode: str = "standard"
    tie_break: str | None = None
    windows: tuple[str, ...] = ()
    time_bits: int = 31
    tick_us: int = 1_000_000
    epoch_us: int = int(DEFAULT_TIEBREAK_EPOCH.timestamp()) * 1_000_000
    retention_ms: Mapping[str, int] = field(default_factory=dict)
    rolling: str = "best"
    rolling_ttl_ms: int = 5000
    ttl_ms: int = 0

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"order must be 'desc' or 'asc', got {self.order!r}")
        if self.rank_mode not in RANK_MODES:
            raise ValueError(f"rank_mode must be one of {', '.join(RANK_MODES)}, got {self.rank_mode!r}")
        if self.tie_break not in (None, "earliest"):
            raise ValueError(f"tie_break must be None or 'earliest', got {self.tie_break!r}")
        if self.tie_break and self.rank_mode != "standard":
            raise ValueError(
                "tie_break='earliest' gives every member its own rank; use rank_mode='standard' with it"
            )
        if (
            isinstance(self.time_bits, bool)
            or not isinstance(self.time_bits, int)
            or not 8 <= self.time_bits <= 45
        ):
            raise ValueError(f"time_bits must be an int in [8, 45], got {self.time_bits!r}")
        for w in self.windows:
            if w not in WINDOWS:
                raise ValueError(f"windows must be drawn from {', '.join(WINDOWS)}, got {w!r}")
        if len(set(self.windows)) != len(self.windows):
            raise ValueError("windows lists a window twice")
        if self.rolling not in ("best", "sum"):
            raise ValueError(f"rolling must be 'best' or 'sum', got {self.rolling!r}")
        if self.rolling == "sum" and self.tie_break:
            raise ValueError("rolling='sum' cannot add tie-broken composites; use rolling='best'")
        base = self.keyspace.tagged("lb", self.name)  # validates the name
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_ops", {})
        object.__setattr__(self, "board_keys", (f"{base}:z", f"{base}:data", f"{base}:u", f"{base}:uc"))
        object.__setattr__(self, "bits", self.time_bits if self.tie_break else 0)
        object.__setattr__(self, "board_view", View(f"{base}:z", self.rank_mode == "dense"))
        keys = self.board_keys
        object.__setattr__(self, "submit_keys", keys if self.rank_mode == "dense" else keys[:2])
        terms = (
            f"{self.order} {1 if self.rank_mode == 'dense' else 0} {self.bits} {self.epoch_us} "
            f"{self.tick_us} {self.ttl_ms} {{now}} {len(self.windows)}"
        )
        object.__setattr__(self, "_terms", terms)
        plain = self.rank_mode != "dense" and not self.bits and not self.ttl_ms and not self.windows
        object.__setattr__(self, "_terms_now0", (self.order if plain else terms.format(now=0)).encode())

    _base: str = field(init=False, repr=False, compare=False)
    _ops: dict[tuple[Any, ...], Script] = field(init=False, repr=False, compare=False)
    board_keys: tuple[str, str, str, str] = field(init=False, repr=False, compare=False)
    """The board, its data hash and its dense-rank index (zset + counts)."""
    bits: int = field(init=False, repr=False, compare=False)
    """Tie-break time bits, 0 without tie-break."""
    board_view: View = field(init=False, repr=False, compare=False)
    submit_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The submit script's keys on a board without windows."""
    _terms: str = field(init=False, repr=False, compare=False)
    _terms_now0: bytes = field(init=False, repr=False, compare=False)

    def submit_terms(self, virtual_now_us: int | None) -> bytes:
        """The submit script's first argument (built once; the virtual clock is for tests)."""
        if not virtual_now_us:
            return self._terms_now0
        return self._terms.format(now=virtual_now_us).encode()

    def key(self, suffix: str) -> str:
        """``<prefix>lb:{name}:<suffix>``."""
        return f"{self._base}:{suffix}"

    def bucket_key(self, window: str, bid: int) -> str:
        return self.key(bucket_label(window, bid))

    def decode(self, stored: Any) -> float | int | None:
        return decode_score(stored, order=self.order, time_bits=self.bits)


# --------------------------------------------------------------------------- flows: writes


_OP_NAMES = frozenset((*SUBMIT_MODES, "remove"))
SubmitOp = tuple[str, str, float | int, bool, bytes]
"""One validated operation: mode, member, score, has data, encoded data."""


def make_op(spec: BoardSpec, mode: str, member: object, score: object, data: Any, has_data: bool) -> SubmitOp:
    """Validate one operation at the edge (tie-break range included, before any write)."""
    if mode not in _OP_NAMES:
        raise ValueError(f"mode must be one of {', '.join(SUBMIT_MODES)}, got {mode!r}")
    m = check_member(member)
    if mode == "remove":
        return ("remove", m, 0, False, b"")
    s = check_score(score, integer=bool(spec.tie_break), what="increment" if mode == "incr" else "score")
    if spec.tie_break and mode != "incr":
        lo, hi = tiebreak_bounds(spec.time_bits)
        if not lo <= s <= hi:
            raise ScoreOutOfRange(
                f"score {s} is outside [{lo}, {hi}], the range a tie-broken board with "
                f"time_bits={spec.time_bits} stores exactly (below 2**53); lower time_bits to widen it"
            )
    return (mode, m, s, has_data, spec.codec.encode(data) if has_data else b"")


def _window_args(spec: BoardSpec, now_us: int) -> tuple[list[str], list[str | int]]:
    keys: list[str] = []
    args: list[str | int] = []
    for w in spec.windows:
        bid = bucket_id(w, now_us)
        keys.append(spec.bucket_key(w, bid))
        args += [w, bid, spec.retention_ms.get(w, int(DEFAULT_RETENTION[w] * 1000)), bucket_end_us(w, bid)]
    return keys, args


def _raise_script_error(exc: Exception) -> None:
    text = str(exc)
    if "leaderboard:" in text:
        msg = text.split("leaderboard:", 1)[1].strip()
        if "tie-break range" in msg:
            raise ScoreOutOfRange(msg) from None
        raise LeaderboardError(msg) from None


_WITH_DATA = {m: m + "+" for m in SUBMIT_MODES}


def _script(keys: tuple[str, ...], args: tuple[Any, ...]) -> Script:
    """The submit script's op. Every key of a board is ``<prefix>lb:{name}:...`` (``Keyspace.
    tagged``): one slot by construction, so the op is built without checking it again."""
    return trusted_script(load("leaderboard_submit"), keys, args)


def submit(
    spec: BoardSpec, ops: Sequence[SubmitOp], virtual_now_us: int | None = None
) -> Flow[list[float | int | None]]:
    """Apply ``ops`` in one script run; return each member's board score after its operation.

    The window buckets are named from a guess of the time (the local wall clock, or the virtual
    clock); the script checks the guess against the server's clock and, at a bucket boundary,
    answers with the right ids, and the flow sends again (nothing was written).
    """
    if not ops:
        return []
    if spec.windows:
        guess = virtual_now_us if virtual_now_us is not None else int((yield WallClock()) * 1_000_000)
    else:
        guess = 0
    tail: list[Any] = []
    for mode, member, score, has_data, data in ops:
        if mode == "remove":
            tail += ("remove", member)
        elif has_data:
            tail += (_WITH_DATA[mode], member, score, data)
        else:
            tail += (mode, member, score)
    terms = spec.submit_terms(virtual_now_us)
    for _ in range(_MAX_BUCKET_RETRIES):
        if spec.windows:
            wkeys, wargs = _window_args(spec, guess)
            keys = (*spec.board_keys[:2], *wkeys, *spec.board_keys[2 : 4 if spec.rank_mode == "dense" else 2])
            op = _script(keys, (terms, *wargs, *tail))
        else:
            op = _script(spec.submit_keys, (terms, *tail))
        try:
            reply = yield op
        except Exception as exc:
            _raise_script_error(exc)
            raise
        if int(reply[0]) == 1:
            if spec.bits:
                return [spec.decode(v) for v in reply[1:]]
            return [None if v is None else float(v) for v in reply[1:]]
        guess = _instant_in(int(reply[1]))
    raise LeaderboardError("the window buckets kept changing while submitting; is the clock jumping?")


def submit_one(spec: BoardSpec, op: SubmitOp, virtual_now_us: int | None = None) -> Flow[float | int | None]:
    """One operation (the hot path of ``Leaderboard.submit``): the member's board score after it.

    On a board without windows the script's arguments are one tuple built here (the script's own
    fast path then runs one or two commands on a board with no options); with windows, ``submit``.
    """
    if spec.windows:
        return (yield from submit(spec, (op,), virtual_now_us))[0]
    mode, member, score, has_data, data = op
    terms = spec.submit_terms(virtual_now_us)
    if mode == "remove":
        args: tuple[Any, ...] = (terms, "remove", member)
    elif has_data:
        args = (terms, _WITH_DATA[mode], member, score, data)
    else:
        args = (terms, mode, member, score)
    try:
        reply = yield _script(spec.submit_keys, args)
    except Exception as exc:
        _raise_script_error(exc)
        raise
    v = reply[1]  # reply[0] is 1: only a window bucket check answers 0
    if v is None:
        return None
    return spec.decode(v) if spec.bits else float(v)


def _instant_in(day: int) -> int:
    """An instant inside the day the server reported (its week and month follow from it)."""
    return day * DAY_US + DAY_US // 2


def set_data(spec: BoardSpec, member: str, data: Any) -> Flow[None]:
    key = spec.key("data")
    hset = Command("HSET", key, member, spec.codec.encode(data))
    if spec.ttl_ms:  # the mount's TTL, refreshed in the same round trip
        yield Batch((hset, Command("PEXPIRE", key, spec.ttl_ms)), transaction=True)
    else:
        yield hset


def get_data(spec: BoardSpec, member: str) -> Flow[Any]:
    raw = yield Command("HGET", spec.key("data"), member)
    return None if raw is None else spec.codec.decode(raw)


# --------------------------------------------------------------------------- flows: reads


def clock(window: str | None, virtual_now_us: int | None) -> Flow[int]:
    """The instant naming a read's bucket: the virtual clock, else the local wall clock."""
    if window is None:
        return 0
    if virtual_now_us is not None:
        return virtual_now_us
    return int((yield WallClock()) * 1_000_000)


def _at(spec: BoardSpec, window: str | None, now: int | None) -> Flow[View]:
    """The view a read of ``window`` looks at, asking for the wall clock only when it needs it."""
    if window is None:
        return spec.board_view
    return view(spec, window, (yield from clock(window, now)))


def view(spec: BoardSpec, window: str | None, now_us: int) -> View:
    """The view for ``window`` at ``now_us`` (reads name buckets from the local or virtual clock)."""
    if window is None:
        return spec.board_view
    n = rolling_days(window)
    if n is None:
        if window not in spec.windows:
            raise ValueError(f"window {window!r} is not kept by this board (windows={spec.windows!r})")
        return View(spec.bucket_key(window, bucket_id(window, now_us)), False)
    if "day" not in spec.windows:
        raise ValueError(f"a rolling window {window!r} needs windows to include 'day'")
    today = bucket_id("day", now_us)
    agg = "SUM" if spec.rolling == "sum" else ("MAX" if spec.order == "desc" else "MIN")
    label = bucket_label("day", today).split(":")[1]
    cache = spec.key(f"last{n}d:{label}:{agg.lower()}")
    return View(cache, False, tuple(spec.bucket_key("day", today - i) for i in range(n)), agg)


_OP_CACHE_SIZE = 256


def read_op(spec: BoardSpec, v: View, query: str, a: Any, b: Any, with_data: bool) -> Script:
    """The read script's op; ops are immutable, so the board keeps its recent ones (hot reads
    such as ``top(10)`` skip rebuilding and slot-checking the same op)."""
    cache: dict[tuple[Any, ...], Script] = spec._ops
    ck = (v.key, query, a, b, with_data)
    op = cache.get(ck)
    if op is None or op.keys[3:] != v.sources:
        if len(cache) >= _OP_CACHE_SIZE:
            cache.clear()
        op = cache[ck] = Script(
            load("leaderboard_read"),
            keys=(v.key, spec.board_keys[1], spec.board_keys[2], *v.sources),
            args=(
                spec.order,
                spec.rank_mode,
                "1" if v.dense_index else "0",
                spec.rolling_ttl_ms,
                v.aggregate,
                query,
                a,
                b,
                "1" if with_data else "0",
            ),
        )
    return op


def _read(spec: BoardSpec, v: View, query: str, a: Any, b: Any, with_data: bool) -> Flow[list[Any]]:
    reply = yield read_op(spec, v, query, a, b, with_data)
    return list(reply)


INLINE_DATA = 256
"""Pages up to this size read member data inside the read script (one round trip, one snapshot).

Larger pages read the rows (ranks, members, scores: one snapshot) in one round trip and the data
with one HMGET right after: the server's Lua turns every reply it handles into Lua values and
back, which costs more than a second round trip once a page holds a few hundred rows."""


def _columns(rows: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any]]:
    """Members and scores of a WITHSCORES reply: flat (RESP2, and scripts), or ``[member,
    score]`` pairs (a RESP3 client: scores already floats), split without a Python step per row."""
    if rows and isinstance(rows[0], (list, tuple)):  # itemgetter maps: no object per row
        return list(map(_first_item, rows)), list(map(_second_item, rows))
    return rows[0::2], rows[1::2]


_first_item, _second_item = itemgetter(0), itemgetter(1)


def _rows(
    spec: BoardSpec,
    rows: Sequence[Any],
    start: int,
    first: int,
    datas: Sequence[Any] | None,
    cols: tuple[Sequence[Any], Sequence[Any]] | None = None,
) -> list[LeaderboardEntry]:
    """Entries from a WITHSCORES-shaped reply whose first row sits at 0-based index ``start``
    with rank ``first``; decoded a whole column at a time (a hot path for large pages)."""
    member_col, scores_raw = cols if cols is not None else _columns(rows)
    members = texts(member_col)
    n = len(members)
    if not n:
        return []
    bits = spec.bits
    scores: list[Any] = (
        list(map(float, scores_raw)) if not bits else [int(float(t)) >> bits for t in scores_raw]
    )
    if spec.rank_mode == "standard":
        ranks: Sequence[int] = range(first, first + n)
    else:
        ranks = _tied_ranks(scores_raw, start, first, spec.rank_mode == "dense")
    data: Any = repeat(None, n) if datas is None else decode_values(spec.codec, datas)
    return list(map(_new, repeat(LeaderboardEntry), zip(ranks, members, scores, data, strict=True)))


_new = tuple.__new__


def _tied_ranks(scores: Sequence[Any], start: int, first: int, dense: bool) -> list[int]:
    """Competition / dense ranks: equal score texts share a rank (what the script compares)."""
    out = [first]
    rank, prev = first, scores[0]
    for i in range(1, len(scores)):
        s = scores[i]
        if s != prev:
            rank = rank + 1 if dense else start + i + 1
            prev = s
        out.append(rank)
    return out


def _page(
    spec: BoardSpec, v: View, query: str, a: Any, b: Any, size: int, with_data: bool
) -> Flow[list[LeaderboardEntry]]:
    """One read of up to ``size`` rows (see :data:`INLINE_DATA` for where member data comes from).

    The script replies ``total, first index, first rank, rows[, data arrays...]``, or ``total``
    alone when there is no row.
    """
    inline = with_data and size <= INLINE_DATA
    if query == "range" and spec.rank_mode == "standard" and not inline and not v.sources:
        rows = yield Command("ZREVRANGE" if spec.order == "desc" else "ZRANGE", v.key, a, b, "WITHSCORES")
        start = first = int(a)
        first += 1
    else:
        reply = yield from _read(spec, v, query, a, b, inline)
        if len(reply) < 4:
            return []
        rows, start, first = reply[3], int(reply[1]), int(reply[2])
        if inline:
            datas = reply[4] if len(reply) == 5 else [d for chunk in reply[4:] for d in chunk]
            return _rows(spec, rows, start, first, datas)
    if not with_data or not rows:
        return _rows(spec, rows, start, first, None)
    cols = _columns(rows)
    del rows  # a RESP3 reply's pair lists: freed before the data arrives, not kept alive across it
    datas = yield Command("HMGET", spec.board_keys[1], *cols[0])
    return _rows(spec, (), start, first, datas, cols)


def entries(
    spec: BoardSpec, window: str | None, now: int | None, start: int, stop: int, with_data: bool = True
) -> Flow[list[LeaderboardEntry]]:
    """Entries at 0-based indexes ``start..stop`` (inclusive), ranked, with data.

    One script run; standard ranks without data need no script (one ZREVRANGE / ZRANGE ...
    WITHSCORES); pages over :data:`INLINE_DATA` rows with data take one HMGET more.
    """
    if stop < start:
        return []
    v = yield from _at(spec, window, now)
    if spec.rank_mode == "standard" and not with_data and not v.sources:
        cmd = "ZREVRANGE" if spec.order == "desc" else "ZRANGE"
        rows = yield Command(cmd, v.key, start, stop, "WITHSCORES")
        return _plain_entries(spec, rows, start)
    return (yield from _page(spec, v, "range", start, stop, stop - start + 1, with_data))


def _plain_entries(spec: BoardSpec, rows: list[Any], start: int) -> list[LeaderboardEntry]:
    """A WITHSCORES reply (flat RESP2 pairs, or ``[member, score]`` pairs) as ranked entries."""
    return _rows(spec, rows, start, start + 1, None)


def around(
    spec: BoardSpec, window: str | None, now: int | None, member: str, size: int, with_data: bool = True
) -> Flow[list[LeaderboardEntry]]:
    """A page of ``size`` around ``member`` (clamped at both ends: a full page where possible)."""
    v = yield from _at(spec, window, now)
    return (yield from _page(spec, v, "around", member, size, size, with_data))


def entry(
    spec: BoardSpec, window: str | None, now: int | None, member: str, with_data: bool = True
) -> Flow[LeaderboardEntry | None]:
    v = yield from _at(spec, window, now)
    found = yield from _page(spec, v, "member", member, 0, 1, with_data)
    return found[0] if found else None


def rank(spec: BoardSpec, window: str | None, now: int | None, member: str) -> Flow[int | None]:
    """1-based rank per the board's rank mode; one command for standard ranks, else one script."""
    now = yield from clock(window, now)
    v = view(spec, window, now)
    if spec.rank_mode == "standard" and not v.sources:
        idx = yield Command("ZREVRANK" if spec.order == "desc" else "ZRANK", v.key, member)
        return None if idx is None else int(idx) + 1
    found = yield from entry(spec, window, now, member, with_data=False)
    return None if found is None else found.rank


def score(spec: BoardSpec, window: str | None, now: int | None, member: str) -> Flow[float | int | None]:
    now = yield from clock(window, now)
    v = view(spec, window, now)
    if v.sources:
        found = yield from entry(spec, window, now, member, with_data=False)
        return None if found is None else found.score
    raw = yield Command("ZSCORE", v.key, member)
    return spec.decode(raw)


def count(spec: BoardSpec, window: str | None, now: int | None) -> Flow[int]:
    v = spec.board_view if window is None else view(spec, window, (yield from clock(window, now)))
    if not v.sources:
        return int((yield Command("ZCARD", v.key)))
    reply = yield from _read(spec, v, "count", 0, 0, False)
    return int(reply[0])


def percentile_of(spec: BoardSpec, window: str | None, now: int | None, member: str) -> Flow[float | None]:
    """The share (0-100) of members ranked strictly worse than ``member``; ``None`` when absent."""
    reply = yield from _read(
        spec,
        (yield from _at(spec, window, now)),
        "percentile",
        member,
        0,
        False,
    )
    if len(reply) < 2:
        return None
    return percentile(int(reply[0]), int(reply[1]))
