"""Leaderboard core without a server: bucket naming, tie-break encoding, validation, flows."""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from redispatterns._core import leaderboard as core
from redispatterns._core.keys import check_same_slot
from redispatterns._core.leaderboard import (
    BoardSpec,
    LeaderboardEntry,
    LeaderboardError,
    ScoreOutOfRange,
    bucket_end_us,
    bucket_id,
    bucket_label,
    decode_score,
    encode_tiebreak,
    tiebreak_bounds,
)
from redispatterns._core.mount import Mount
from redispatterns._core.ops import Batch, Command, Script, WallClock
from redispatterns.leaderboard import AsyncLeaderboard, Leaderboard
from redispatterns.testing import replay
from redispatterns.testing.replay import ANY, ReplayMismatch

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def spec(**kw: Any) -> BoardSpec:
    m = Mount(prefix="t:")
    return BoardSpec("b", m.keyspace, m.codec, **kw)


# --------------------------------------------------------------------------- buckets


@settings(max_examples=300)
@given(st.integers(min_value=-(10**16), max_value=6 * 10**15))
def test_bucket_ids_follow_the_utc_calendar(t_us: int) -> None:
    when = EPOCH + dt.timedelta(microseconds=t_us)
    day = when.date()
    assert bucket_id("day", t_us) == (day - EPOCH.date()).days
    monday = day - dt.timedelta(days=day.weekday())
    wid = bucket_id("week", t_us)
    assert bucket_label("week", wid) == f"week:{monday.isoformat()}"
    mid = bucket_id("month", t_us)
    assert mid == day.year * 12 + day.month - 1
    assert bucket_label("month", mid) == f"month:{day.year:04d}-{day.month:02d}"
    assert bucket_label("day", bucket_id("day", t_us)) == f"day:{day.isoformat()}"
    for w in core.WINDOWS:
        b = bucket_id(w, t_us)
        assert core.bucket_start_us(w, b) <= t_us < bucket_end_us(w, b)
        assert bucket_id(w, bucket_end_us(w, b)) == b + 1


def test_bucket_boundaries_at_midnight_week_start_and_new_year() -> None:
    def us(y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0) -> int:
        return int(dt.datetime(y, mo, d, h, mi, sec, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000

    assert bucket_id("day", us(2026, 3, 30) - 1) + 1 == bucket_id("day", us(2026, 3, 30))
    assert bucket_id("week", us(2026, 3, 30) - 1) + 1 == bucket_id("week", us(2026, 3, 30))  # a Monday
    assert bucket_id("week", us(2026, 3, 31)) == bucket_id("week", us(2026, 4, 5, 23, 59, 59))
    assert bucket_label("month", bucket_id("month", us(2027, 1, 1) - 1)) == "month:2026-12"
    assert bucket_end_us("month", bucket_id("month", us(2024, 2, 10))) == us(2024, 3, 1)
    with pytest.raises(ValueError, match="window"):
        bucket_id("year", 0)


def test_rolling_window_names() -> None:
    assert core.rolling_days("7d") == 7 and core.rolling_days("day") is None
    for bad in ("0d", "367d", "7", "d", "-1d", "week2"):
        with pytest.raises(ValueError):
            core.rolling_days(bad)


# --------------------------------------------------------------------------- tie-break


@pytest.mark.parametrize("bits", [8, 31, 45])
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_tiebreak_round_trips_at_its_bounds(bits: int, order: str) -> None:
    lo, hi = tiebreak_bounds(bits)
    assert hi * 2**bits + 2**bits - 1 < 2**53 and lo * 2**bits >= -(2**53)
    for s in (lo, lo + 1, -1, 0, 1, hi - 1, hi):
        for t in (0, 1, 2**bits - 1):
            c = encode_tiebreak(s, t, order=order, time_bits=bits)
            assert float(c) == c  # exact as a double
            assert decode_score(str(float(c)), order=order, time_bits=bits) == s
            assert decode_score(repr(float(c)).encode(), order=order, time_bits=bits) == s
            assert core.decode_time_part(c, order=order, time_bits=bits) == t
    with pytest.raises(ScoreOutOfRange, match="2\\*\\*53"):
        encode_tiebreak(hi + 1, 0, order=order, time_bits=bits)
    with pytest.raises(ScoreOutOfRange):
        encode_tiebreak(lo - 1, 0, order=order, time_bits=bits)
    with pytest.raises(ScoreOutOfRange):
        encode_tiebreak(0, 2**bits, order=order, time_bits=bits)


@given(
    st.integers(-(2**22), 2**22 - 1),
    st.integers(0, 2**31 - 1),
    st.integers(-(2**22), 2**22 - 1),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["desc", "asc"]),
)
def test_tiebreak_orders_by_score_then_earliest(s1: int, t1: int, s2: int, t2: int, order: str) -> None:
    c1 = encode_tiebreak(s1, t1, order=order, time_bits=31)
    c2 = encode_tiebreak(s2, t2, order=order, time_bits=31)
    key1 = (-s1 if order == "desc" else s1, t1)  # smaller key ranks first
    key2 = (-s2 if order == "desc" else s2, t2)
    first1 = c1 > c2 if order == "desc" else c1 < c2
    if key1 != key2:
        assert first1 == (key1 < key2)
    else:
        assert c1 == c2


def test_decode_without_tiebreak_and_percentile() -> None:
    assert decode_score(None, order="desc", time_bits=0) is None
    assert decode_score(b"-0", order="desc", time_bits=0) == 0.0
    assert decode_score(2.5, order="desc", time_bits=0) == 2.5
    assert core.percentile(0, 0) == 0.0 and core.percentile(4, 1) == 25.0


# --------------------------------------------------------------------------- validation


def test_spec_validation() -> None:
    for kw, match in (
        ({"order": "up"}, "order"),
        ({"rank_mode": "olympic"}, "rank_mode"),
        ({"tie_break": "latest"}, "tie_break"),
        ({"tie_break": "earliest", "rank_mode": "dense"}, "standard"),
        ({"time_bits": 50}, "time_bits"),
        ({"time_bits": True}, "time_bits"),
        ({"windows": ("year",)}, "windows"),
        ({"windows": ("day", "day")}, "twice"),
        ({"rolling": "avg"}, "rolling"),
        ({"rolling": "sum", "tie_break": "earliest"}, "composites"),
    ):
        with pytest.raises(ValueError, match=match):
            spec(**kw)
    with pytest.raises(ValueError, match="empty"):
        BoardSpec("", Mount().keyspace, Mount().codec)
    s = spec(windows=("day",))
    assert s.key("z") == "t:lb:{b}:z" and s.bucket_key("day", 0) == "t:lb:{b}:day:1970-01-01"


def test_make_op_validates_at_the_edge() -> None:
    s, tb = spec(), spec(tie_break="earliest", time_bits=40)
    assert core.make_op(s, "best", "a", 1, None, False) == ("best", "a", 1.0, False, b"")
    assert core.make_op(s, "incr", "a", -0.0, {"x": 1}, True) == ("incr", "a", 0.0, True, b'{"x":1}')
    assert core.make_op(tb, "latest", "a", 3.0, None, False)[2] == 3
    assert core.make_op(s, "remove", "a", None, None, False)[0] == "remove"
    cases: list[tuple[Any, ...]] = [
        (s, "max", "a", 1, ValueError, "mode"),
        (s, "best", 7, 1, TypeError, "member"),
        (s, "best", "", 1, ValueError, "empty"),
        (s, "best", "a", "1", TypeError, "int or float"),
        (s, "best", "a", True, TypeError, "int or float"),
        (s, "best", "a", float("nan"), ValueError, "finite"),
        (s, "best", "a", float("inf"), ValueError, "finite"),
        (s, "best", "a", 2**60, ValueError, "2\\*\\*53"),
        (tb, "best", "a", 1.5, ValueError, "integer"),
        (tb, "best", "a", 2**13, ScoreOutOfRange, "time_bits=40"),
        (tb, "latest", "a", -(2**13) - 1, ScoreOutOfRange, "below 2"),
    ]
    for sp, mode, member, score, exc, match in cases:
        with pytest.raises(exc, match=match):
            core.make_op(sp, mode, member, score, None, False)
    assert core.make_op(tb, "incr", "a", 2**20, None, False)[2] == 2**20  # checked by the script
    with pytest.raises(TypeError, match="JSON"):
        core.make_op(s, "best", "a", 1, object(), True)


def test_check_count() -> None:
    assert core.check_count(5, "n") == 5
    with pytest.raises(TypeError):
        core.check_count(5.0, "n")
    with pytest.raises(ValueError, match=r"\[1, 10000\]"):
        core.check_count(0, "n")
    assert core.check_count(core.MAX_PAGE, "n") == 10_000
    with pytest.raises(ValueError):
        core.check_count(10_001, "n")


# --------------------------------------------------------------------------- flows


def _submit_script(keys: tuple[str, ...] | None = None) -> Any:
    def match(op: Any) -> bool:
        return (
            isinstance(op, Script)
            and op.script.name == "leaderboard_submit"
            and (keys is None or op.keys[2:] == keys)
        )

    return match


def test_submit_flow_without_windows_is_one_script() -> None:
    s = spec(rank_mode="dense")
    ops = [core.make_op(s, "best", "a", 2, None, False), core.make_op(s, "remove", "b", 0, None, False)]
    out = replay(core.submit(s, ops), [(_submit_script(("t:lb:{b}:u", "t:lb:{b}:uc")), [1, b"2", None])])
    assert out == [2.0, None]
    assert replay(core.submit(s, []), []) == []
    seen, _ = replay_trace(core.submit(s, ops))
    script = seen[0]
    assert script.keys == ("t:lb:{b}:z", "t:lb:{b}:data", "t:lb:{b}:u", "t:lb:{b}:uc")  # dense: index last
    assert script.args == (f"desc 1 0 {s.epoch_us} 1000000 0 0 0".encode(), "best", "a", 2.0, "remove", "b")
    check_same_slot(script.keys)  # built without the check: one tag by construction
    plain = spec(order="asc")  # no option in use: the order alone
    seen, _ = replay_trace(core.submit(plain, [core.make_op(plain, "latest", "a", 1, None, False)]))
    assert seen[0].keys == ("t:lb:{b}:z", "t:lb:{b}:data") and seen[0].args == (b"asc", "latest", "a", 1.0)
    with_data = [core.make_op(s, "incr", "c", 1, {"k": 1}, True)]
    seen, _ = replay_trace(core.submit(s, with_data, 7))
    assert seen[0].args == (f"desc 1 0 {s.epoch_us} 1000000 0 7 0".encode(), "incr+", "c", 1.0, b'{"k":1}')


def replay_trace(flow: Any) -> Any:
    from redispatterns.testing.replay import trace

    return trace(flow, lambda op: [1, b"2", None])


def test_submit_flow_retries_with_the_servers_buckets() -> None:
    s = spec(windows=("day", "week"))
    ops = [core.make_op(s, "incr", "a", 1, None, False)]
    day = 20_000
    wrong = (s.bucket_key("day", day - 1), s.bucket_key("week", bucket_id("week", (day - 1) * core.DAY_US)))
    right = (s.bucket_key("day", day), s.bucket_key("week", bucket_id("week", day * core.DAY_US)))
    steps = [
        (WallClock, (day - 1) * 86400.0 + 10),
        (_submit_script(wrong), [0, day, 0, 0]),
        (_submit_script(right), [1, b"1"]),
    ]
    assert replay(core.submit(s, ops), steps) == [1.0]
    looping = [(WallClock, 0.0)] + [(_submit_script(), [0, day, 0, 0])] * 3
    with pytest.raises(LeaderboardError, match="clock"):
        replay(core.submit(s, ops), looping)
    # a virtual clock names the buckets and goes to the script, no WallClock asked
    vs = [(_submit_script(right), [1, b"5"])]
    assert replay(core.submit(s, ops, day * core.DAY_US + 1), vs) == [5.0]


def test_submit_flow_maps_script_errors() -> None:
    s = spec(tie_break="earliest")
    ops = [core.make_op(s, "incr", "a", 1, None, False)]
    for text, exc in (
        ("ERR leaderboard: score 5 outside the tie-break range [-4, 3]", ScoreOutOfRange),
        ("ERR leaderboard: the clock is outside the tie-break time range", LeaderboardError),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", ResponseError),
    ):
        with pytest.raises(exc) as info:
            replay(core.submit(s, ops), [(ANY, ResponseError(text))])
        if exc is LeaderboardError:
            assert not isinstance(info.value, ScoreOutOfRange)
    stored = str(encode_tiebreak(-3, 5, order="desc", time_bits=31)).encode()
    assert replay(core.submit(s, ops), [(ANY, [1, stored, None])]) == [-3, None]  # the primary back


def test_read_flows_pick_one_command_or_one_script() -> None:
    s = spec()
    asc = spec(order="asc")
    comp = spec(rank_mode="competition", windows=("day",))
    assert replay(core.rank(s, None, None, "a"), [(Command("ZREVRANK", "t:lb:{b}:z", "a"), 4)]) == 5
    assert replay(core.rank(asc, None, None, "a"), [(Command("ZRANK", "t:lb:{b}:z", "a"), None)]) is None
    reply = [10, 2, 3, [b"a", b"7"]]
    assert replay(core.rank(comp, None, None, "a"), [(Script, reply)]) == 3
    assert replay(core.rank(comp, None, None, "zz"), [(Script, [10])]) is None
    assert replay(core.score(s, None, None, "a"), [(Command("ZSCORE", "t:lb:{b}:z", "a"), b"7")]) == 7.0
    assert replay(core.count(s, None, None), [(Command("ZCARD", "t:lb:{b}:z"), 3)]) == 3
    # a rolling view is a script (it may build the union), naming buckets from the wall clock
    steps = [(WallClock, 86400.0 * 3), (Script, reply)]
    assert replay(core.score(comp, "2d", None, "a"), steps) == 7.0
    assert replay(core.count(comp, "2d", 0), [(Script, [4])]) == 4
    assert replay(core.count(comp, "day", 0), [(Command("ZCARD", "t:lb:{b}:day:1970-01-01"), 2)]) == 2
    assert replay(core.percentile_of(s, None, None, "a"), [(Script, [4, 1])]) == 25.0
    assert replay(core.percentile_of(s, None, None, "a"), [(Script, [4])]) is None
    assert replay(core.entries(s, None, None, 5, 4), []) == []
    plain = [(Command("ZRANGE", "t:lb:{b}:z", 3, 4, "WITHSCORES"), [b"a", b"1", b"b", b"2"])]
    assert replay(core.entries(asc, None, None, 3, 4, False), plain) == [
        LeaderboardEntry(4, "a", 1.0, None),
        LeaderboardEntry(5, "b", 2.0, None),
    ]
    pairs = [(Command("ZREVRANGE", "t:lb:{b}:z", 0, 0, "WITHSCORES"), [["a", 3.0]])]
    assert replay(core.entries(s, None, None, 0, 0, False), pairs) == [LeaderboardEntry(1, "a", 3.0, None)]
    tb = spec(tie_break="earliest")
    stored = str(float(core.encode_tiebreak(-3, 5, order="desc", time_bits=31)))
    tbr = [(Command, [b"a", stored.encode()])]
    assert replay(core.entries(tb, None, None, 0, 0, False), tbr) == [LeaderboardEntry(1, "a", -3, None)]
    assert replay(core.around(s, None, None, "a", 3), [(Script, [10])]) == []
    got = replay(
        core.entries(s, None, None, 0, 1), [(Script, [0, 0, 1, [b"a", b"2", b"b", b"1"], [b'{"k":1}', None]])]
    )
    assert got == [LeaderboardEntry(1, "a", 2.0, {"k": 1}), LeaderboardEntry(2, "b", 1.0, None)]
    with pytest.raises(ReplayMismatch):
        replay(core.rank(s, None, None, "a"), [(Script, reply)])


def _rows(n: int, score: Any = lambda i: 100 - i // 3) -> list[bytes]:
    return [x for i in range(n) for x in (f"m{i}".encode(), str(score(i)).encode())]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("standard", [8, 9, 10, 11, 12, 13, 14]),
        ("competition", [5, 5, 10, 10, 10, 13, 13]),
        ("dense", [5, 5, 6, 6, 6, 7, 7]),
    ],
)
def test_ranks_after_the_first_row_follow_the_score_texts(mode: str, expected: list[int]) -> None:
    """The script ranks the first row only; equal score texts share a rank on the client."""
    s = spec(rank_mode=mode)
    texts = [b"9", b"9", b"8", b"8", b"8", b"7.5", b"7.5"]
    flat = [x for i, t in enumerate(texts) for x in (f"m{i}".encode(), t)]
    first = 8 if mode == "standard" else 5
    got = replay(core.entries(s, None, None, 7, 13), [(Script, [0, 7, first, flat, [None] * 7])])
    assert [e.rank for e in got] == expected
    assert [e.member for e in got] == [f"m{i}" for i in range(7)]
    assert [e.score for e in got] == [9.0, 9.0, 8.0, 8.0, 8.0, 7.5, 7.5]


def test_large_pages_read_rows_then_data_in_a_second_round_trip() -> None:
    s = spec()
    n = core.INLINE_DATA + 1
    flat = _rows(n)
    data: list[bytes | None] = [f'{{"i":{i}}}'.encode() for i in range(n)]
    data[3] = None  # a member without data
    steps: list[tuple[Any, Any]] = [
        (Command("ZREVRANGE", "t:lb:{b}:z", 10, 10 + n - 1, "WITHSCORES"), flat),
        (Command("HMGET", "t:lb:{b}:data", *flat[0::2]), data),
    ]
    got = replay(core.entries(s, None, None, 10, 10 + n - 1), steps)
    assert [e.rank for e in got] == list(range(11, 12 + n - 1))
    assert got[0] == LeaderboardEntry(11, "m0", 100.0, {"i": 0}) and got[3].data is None
    # RESP3 clients reply [member, score] pairs
    pairs = [[m, float(sc)] for m, sc in zip(flat[0::2], flat[1::2], strict=True)]
    steps = [(Command, pairs), (Command("HMGET", "t:lb:{b}:data", *flat[0::2]), data)]
    assert replay(core.entries(s, None, None, 10, 10 + n - 1), steps)[1:] == got[1:]
    # competition ranks need the script: the rows (without data) first, then HMGET
    comp = spec(rank_mode="competition")

    def rows_only(op: Any) -> bool:
        return isinstance(op, Script) and op.args[-1] == "0" and op.args[5] == "range"

    steps = [(rows_only, [0, 0, 1, flat]), (Command("HMGET", "t:lb:{b}:data", *flat[0::2]), data)]
    got = replay(core.entries(comp, None, None, 0, n - 1), steps)
    assert [e.rank for e in got[:4]] == [1, 1, 1, 4] and got[-1].data == {"i": n - 1}
    # an empty page asks for no data
    assert replay(core.entries(s, None, None, 0, n - 1), [(Command, [])]) == []
    assert replay(core.around(comp, None, None, "zz", n), [(Script, [0])]) == []


def test_inline_data_may_come_in_several_chunks_and_any_codec_decodes_it() -> None:
    s = spec(rank_mode="dense")
    reply = [0, 0, 1, _rows(3), [b'{"a":1}', b"\xffraw"], [b"[2]"]]
    got = replay(core.entries(s, None, None, 0, 2), [(Script, reply)])
    assert [e.data for e in got] == [{"a": 1}, b"raw", [2]]  # bytes behind the codec's mark
    assert [e.rank for e in got] == [1, 1, 1]

    class Upper:
        def encode(self, value: Any) -> bytes:
            return str(value).encode()

        def decode(self, data: bytes | str) -> Any:
            return data.upper() if isinstance(data, str) else data.decode().upper()

    m = Mount(prefix="t:", codec=Upper())
    custom = BoardSpec("b", m.keyspace, m.codec)
    reply = [0, 0, 1, [b"\xe9t\xe9", b"1", b"b", b"2"], [b"x", None]]
    got = replay(core.entries(custom, None, None, 0, 1), [(Script, reply)])
    assert got == [LeaderboardEntry(1, "\udce9t\udce9", 1.0, "X"), LeaderboardEntry(2, "b", 2.0, None)]


def test_views_and_their_keys() -> None:
    s = spec(windows=("day", "week"), rank_mode="dense")
    v = core.view(s, None, 0)
    assert v.key == "t:lb:{b}:z" and v.dense_index and not v.sources
    v = core.view(s, "week", 0)
    assert v.key == "t:lb:{b}:week:1969-12-29" and not v.dense_index
    v = core.view(s, "3d", 2 * core.DAY_US)
    assert v.key == "t:lb:{b}:last3d:1970-01-03:max" and v.aggregate == "MAX"
    assert v.sources == tuple(s.bucket_key("day", d) for d in (2, 1, 0))
    assert core.view(spec(windows=("day",), order="asc"), "2d", 0).aggregate == "MIN"
    assert core.view(spec(windows=("day",), rolling="sum"), "2d", 0).key.endswith(":sum")
    with pytest.raises(ValueError, match="not kept"):
        core.view(s, "month", 0)
    with pytest.raises(ValueError, match="'day'"):
        core.view(spec(windows=("week",)), "7d", 0)


def test_data_flows() -> None:
    s = spec(ttl_ms=5000)
    steps = [
        (
            Batch(
                (Command("HSET", "t:lb:{b}:data", "a", b"[1]"), Command("PEXPIRE", "t:lb:{b}:data", 5000)),
                transaction=True,
            ),
            [1, 1],
        )
    ]
    assert replay(core.set_data(s, "a", [1]), steps) is None
    assert replay(core.set_data(spec(), "a", 2), [(Command("HSET", "t:lb:{b}:data", "a", b"2"), 1)]) is None
    assert replay(core.get_data(s, "a"), [(Command("HGET", "t:lb:{b}:data", "a"), b"[1]")]) == [1]
    assert replay(core.get_data(s, "a"), [(ANY, None)]) is None


# --------------------------------------------------------------------------- shells (no I/O)


def test_shells_validate_before_any_io() -> None:
    with pytest.raises(TypeError, match="name"):
        Leaderboard(3)  # type: ignore[arg-type]
    for kw, exc in (
        ({"windows": "day"}, TypeError),
        ({"retention": {"year": 1}}, ValueError),
        ({"retention": {"day": 0}}, ValueError),
        ({"tie_break_tick": 0}, ValueError),
        ({"tie_break_tick": "1"}, TypeError),
        ({"tie_break_epoch": None}, TypeError),
        ({"rolling_ttl": 0}, ValueError),
        ({"clock": 5}, TypeError),
        ({"rank_mode": "x"}, ValueError),
    ):
        with pytest.raises(exc):
            Leaderboard("x", **kw)
    b = Leaderboard("x", windows=("day",), retention={"day": 60})
    assert b.name == "x" and "Leaderboard 'x'" in repr(b)
    assert b._spec.retention_ms == {"day": 60000}
    with pytest.raises(ValueError):
        b.top(0)
    with pytest.raises(ValueError):
        b.page(0)
    with pytest.raises(TypeError):
        b.around(None, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="window"):
        b.top(3, window=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not kept"):
        b.rank("a", window="month")
    with pytest.raises(TypeError, match="tuples"):
        b.submit_many([["a", 1]])  # type: ignore[list-item]


def test_async_twin_mirrors_the_sync_shell() -> None:
    names = [n for n in vars(Leaderboard) if not n.startswith("_")]
    assert names and set(names) == {n for n in vars(AsyncLeaderboard) if not n.startswith("_")}
    for n in names:
        assert inspect.iscoroutinefunction(getattr(AsyncLeaderboard, n))
        assert (
            inspect.signature(getattr(Leaderboard, n)).parameters.keys()
            == inspect.signature(getattr(AsyncLeaderboard, n)).parameters.keys()
        )


def test_read_ops_are_reused_and_the_cache_is_bounded() -> None:
    s = spec(windows=("day",))
    v = s.board_view
    op = core.read_op(s, v, "range", 0, 9, True)
    assert core.read_op(s, v, "range", 0, 9, True) is op
    assert core.read_op(s, v, "range", 0, 9, False) is not op
    rolling = core.view(s, "2d", 0)
    later = core.View(rolling.key, False, (*rolling.sources[:1], s.bucket_key("day", 5)), rolling.aggregate)
    first = core.read_op(s, rolling, "count", 0, 0, False)
    assert core.read_op(s, later, "count", 0, 0, False).keys[3:] == later.sources != first.keys[3:]
    for i in range(core._OP_CACHE_SIZE + 5):
        core.read_op(s, v, "range", i, i, True)
    assert len(s._ops) <= core._OP_CACHE_SIZE


def test_no_code_path_pages_by_score_with_an_offset() -> None:
    """Deep pages use index ranges (O(log N + M)); BYSCORE ... LIMIT offset would walk the offset."""
    import re

    from redispatterns._core.scripts import lua_dir

    sources = {p.name: p.read_text() for p in lua_dir().glob("leaderboard_*.lua")}
    assert set(sources) == {"leaderboard_read.lua", "leaderboard_submit.lua"}
    seen = 0
    for name, text in sources.items():
        for m in re.finditer(r"'LIMIT',\s*([^,]+),", text):
            seen += 1
            assert m.group(1).strip() == "0", f"{name}: LIMIT with offset {m.group(1)}"
    assert seen == 2  # the dense walk's two hops, offset 0 each
    core_src = inspect.getsource(core)
    assert "BYSCORE" not in core_src and "LIMIT" not in core_src
