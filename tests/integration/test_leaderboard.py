"""Leaderboard on every backend and flavour: rank modes vs an oracle, concurrency, pages, windows."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import threading
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redispatterns import Mount
from redispatterns._core import leaderboard as core
from redispatterns._core.ops import Op, Script, WallClock
from redispatterns._core.scripts import load
from redispatterns.leaderboard import AsyncLeaderboard, Leaderboard, LeaderboardEntry, ScoreOutOfRange
from redispatterns.testing.plugin import Harness

_names = itertools.count()


def board(rp: Harness, **kw: Any) -> Any:
    cls = rp.pick(Leaderboard, AsyncLeaderboard)
    kw.setdefault("client", rp.client)
    return cls(f"b{next(_names)}", **kw)


# --------------------------------------------------------------------------- oracle


def oracle(scores: dict[str, float], order: str, mode: str) -> list[tuple[int, str, float]]:
    """Redis order (ties by member bytes, reversed on desc boards) and the rank of each row."""
    rows = sorted(scores.items(), key=lambda kv: (kv[1], kv[0].encode()), reverse=order == "desc")

    def better(a: float, b: float) -> bool:
        return a > b if order == "desc" else a < b

    out = []
    for i, (m, s) in enumerate(rows):
        if mode == "standard":
            r = i + 1
        elif mode == "competition":
            r = 1 + sum(better(o, s) for o in scores.values())
        else:
            r = 1 + len({o for o in scores.values() if better(o, s)})
        out.append((r, m, s))
    return out


scores_st = st.dictionaries(
    st.text(alphabet="abcxyz", min_size=1, max_size=3),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 7.0, 1e9, -3.0, 0.1]),
    min_size=1,
    max_size=12,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scores=scores_st,
    order=st.sampled_from(["desc", "asc"]),
    mode=st.sampled_from(["standard", "competition", "dense"]),
    size=st.integers(1, 5),
)
def test_rank_modes_match_the_oracle(
    rp: Harness, scores: dict[str, float], order: str, mode: str, size: int
) -> None:
    b = board(rp, order=order, rank_mode=mode)
    rp.call(b.submit_many(scores))
    want = oracle({m: s + 0.0 for m, s in scores.items()}, order, mode)
    got = rp.call(b.top(len(scores) + 3))
    assert [(e.rank, e.member, e.score) for e in got] == want
    # pages concatenated give the same rows, and a rank agrees with the rank shown in pages
    pages: list[LeaderboardEntry] = []
    for n in range(1, len(scores) // size + 3):
        pages += rp.call(b.page(n, size))
    assert pages == got
    assert rp.call(b.top(len(scores) + 3, with_data=False)) == got  # one plain ZREVRANGE when standard
    assert rp.call(b.page(2, size, with_data=False)) == got[size : 2 * size]
    r, m, s = random.choice(want)
    assert rp.call(b.rank(m)) == r
    assert rp.call(b.entry(m)) == LeaderboardEntry(r, m, s, None)
    worse = sum((o < s) if order == "desc" else (o > s) for _, _, o in want)
    assert rp.call(b.percentile(m)) == pytest.approx(100.0 * worse / len(want))
    assert rp.call(b.count()) == len(want)


def test_dense_index_after_updates_and_removals(rp: Harness) -> None:
    b = board(rp, rank_mode="dense")
    rng = random.Random(7)
    model: dict[str, float] = {}
    for _ in range(60):
        m = f"m{rng.randrange(12)}"
        op = rng.choice(["best", "latest", "incr", "remove"])
        s = float(rng.randrange(-3, 4))
        if op == "remove":
            rp.call(b.remove(m))
            model.pop(m, None)
        else:
            rp.call(b.submit(m, s, op))
            old = model.get(m)
            model[m] = (
                s if old is None or op == "latest" else old + s if op == "incr" else max(old, s)
            ) + 0.0
    got = rp.call(b.top(100))
    assert [(e.rank, e.member, e.score) for e in got] == oracle(model, "desc", "dense")
    aux = {float(x) for x in rp.sync_client.zrange(b._spec.key("u"), 0, -1)}
    assert aux == set(model.values())
    counts = {float(k): int(v) for k, v in rp.sync_client.hgetall(b._spec.key("uc")).items()}
    assert counts == {s: list(model.values()).count(s) for s in set(model.values())}


def test_keep_best_and_incr_under_16_concurrent_submitters(rp: Harness) -> None:
    b = board(rp, windows=("day",), rank_mode="dense")
    c = board(rp)
    values = [[random.uniform(-1000, 1000) for _ in range(20)] for _ in range(16)]
    if rp.is_async:

        async def worker(vals: list[float]) -> None:
            for v in vals:
                await b.submit("p", v)
                await c.submit("n", 1, "incr")

        async def all_workers() -> None:
            await asyncio.gather(*(worker(v) for v in values))

        # redis-py 8.1's asyncio RedisCluster breaks when many tasks make its first calls at
        # once (AttributeError / "Connection closed by server"): initialise it first.
        rp.call(b.count())
        rp.call(all_workers())
    else:
        clients = [rp.backend.sync_client() for _ in values]

        def run(i: int) -> None:
            mine = Leaderboard(b.name, rank_mode="dense", windows=("day",), client=clients[i])
            counter = Leaderboard(c.name, client=clients[i])
            for v in values[i]:
                mine.submit("p", v)
                counter.submit("n", 1, "incr")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    best = max(max(v) for v in values)
    assert rp.call(b.score("p")) == best
    assert rp.call(b.score("p", window="day")) == best
    assert rp.call(c.score("n")) == 16 * 20
    assert rp.sync_client.hgetall(b._spec.key("uc")) in (
        {repr(best).encode(): b"1"},
        {f"{best:.17g}".encode(): b"1"},
    )


def test_dense_index_stays_exact_under_concurrent_random_writers(rp: Harness) -> None:
    b = board(rp, rank_mode="dense")
    rp.call(b.count())  # initialise the client before the crowd (see above)

    def plan(seed: int) -> list[tuple[str, str, float]]:
        rng = random.Random(seed)
        ops = ["best", "latest", "incr", "remove"]
        return [(rng.choice(ops), f"m{rng.randrange(100)}", float(rng.randrange(-5, 6))) for _ in range(25)]

    plans = [plan(i) for i in range(16)]
    if rp.is_async:

        async def worker(p: list[tuple[str, str, float]]) -> None:
            for op, m, s in p:
                await (b.remove(m) if op == "remove" else b.submit(m, s, op, data={"by": m}))

        async def crowd() -> None:
            await asyncio.gather(*(worker(p) for p in plans))

        rp.call(crowd())
    else:

        def run(p: list[tuple[str, str, float]]) -> None:
            mine = Leaderboard(b.name, rank_mode="dense", client=rp.backend.sync_client())
            for op, m, s in p:
                mine.remove(m) if op == "remove" else mine.submit(m, s, op, data={"by": m})  # type: ignore[arg-type]

        threads = [threading.Thread(target=run, args=(p,)) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = rp.call(b.top(100))
    present = {e.member: e.score for e in rows}
    aux = {float(x) for x in rp.sync_client.zrange(b._spec.key("u"), 0, -1)}
    assert aux == set(present.values())
    counts = {float(k): int(v) for k, v in rp.sync_client.hgetall(b._spec.key("uc")).items()}
    assert counts == {s: list(present.values()).count(s) for s in aux}
    assert [(e.rank, e.member) for e in rows] == [(r, m) for r, m, _ in oracle(present, "desc", "dense")]
    assert all(e.data == {"by": e.member} for e in rows)
    stored = {k.decode() for k in rp.sync_client.hkeys(b._spec.key("data"))}
    assert stored == set(present)


@pytest.mark.parametrize("size", [1, 4, 5])
def test_around_is_clamped_and_full_where_possible(rp: Harness, size: int) -> None:
    b = board(rp)
    rp.call(b.submit_many({f"m{i:02d}": float(i) for i in range(12)}))
    order = [f"m{i:02d}" for i in reversed(range(12))]
    for idx in (0, 1, 5, 10, 11):
        got = rp.call(b.around(order[idx], size))
        start = max(0, min(idx - size // 2, 12 - size))
        assert [e.member for e in got] == order[start : start + size]
        assert [e.rank for e in got] == list(range(start + 1, start + size + 1))
        assert order[idx] in [e.member for e in got]
    assert rp.call(b.around("nobody", size)) == []
    small = board(rp, order="asc")
    rp.call(small.submit_many({"a": 1, "b": 2, "c": 3}))
    assert [e.member for e in rp.call(small.around("c", 10))] == ["a", "b", "c"]


def test_member_data_comes_back_with_entries(rp: Harness) -> None:
    b = board(rp)
    rp.call(b.submit("ada", 10, data={"country": "UK"}))
    rp.call(b.submit("bob", 7))
    rp.call(b.set_data("bob", ["x", 1]))
    rp.call(b.set_data("cyd", "not on the board"))
    assert rp.call(b.top(5)) == [
        LeaderboardEntry(1, "ada", 10.0, {"country": "UK"}),
        LeaderboardEntry(2, "bob", 7.0, ["x", 1]),
    ]
    assert rp.call(b.top(5, with_data=False))[0].data is None
    assert rp.call(b.data("cyd")) == "not on the board"
    assert rp.call(b.remove("ada", "ada", "zed")) == 1
    assert rp.call(b.data("ada")) is None
    assert rp.call(b.rank("ada")) is None and rp.call(b.score("ada")) is None
    assert rp.call(b.entry("ada")) is None and rp.call(b.percentile("ada")) is None
    assert rp.call(b.page(3, 10)) == []


@pytest.mark.parametrize("mode", ["standard", "competition", "dense"])
def test_pages_of_every_size_up_to_10000_match_the_oracle_with_data(rp: Harness, mode: str) -> None:
    """Small pages read data inside the script, large ones with one HMGET after: same rows."""
    n = 10_000 if not rp.backend.is_fake else 1200
    b = board(rp, rank_mode=mode)
    scores = {f"m{i:05}": float(i % 37) for i in range(n)}
    for i in range(0, n, 2000):
        chunk = list(scores.items())[i : i + 2000]
        rp.call(b.submit_many([(m, s, {"i": int(m[1:])}) for m, s in chunk if int(m[1:]) % 5]))
        rp.call(b.submit_many([(m, s) for m, s in chunk if not int(m[1:]) % 5]))
    want = [(r, m, s, None if not int(m[1:]) % 5 else {"i": int(m[1:])}) for r, m, s in _ranked(scores, mode)]
    for size in (10, core.INLINE_DATA, core.INLINE_DATA + 1, 1000, n):
        got = rp.call(b.top(size))
        assert [tuple(e) for e in got] == want[:size], size
    got = rp.call(b.page(3, 700))
    assert [tuple(e) for e in got] == want[1400:2100]
    got = rp.call(b.around("m00500", 301))
    at = [e[1] for e in want].index("m00500")
    assert [e.member for e in got] == [e[1] for e in want[at - 150 : at + 151]]
    assert [tuple(e) for e in got] == want[at - 150 : at + 151]
    assert all(type(e) is LeaderboardEntry for e in got)


def _ranked(scores: dict[str, float], mode: str) -> list[tuple[int, str, float]]:
    """The oracle's answer for a descending board, in O(n log n) (the oracle is quadratic)."""
    rows = sorted(scores.items(), key=lambda kv: (kv[1], kv[0].encode()), reverse=True)
    out: list[tuple[int, str, float]] = []
    for i, (m, s) in enumerate(rows):
        if mode == "standard" or i == 0 or s != rows[i - 1][1]:
            r = i + 1 if mode != "dense" else (out[-1][0] + 1 if out else 1)
        else:
            r = out[-1][0]
        out.append((r, m, s))
    return out


def test_the_read_script_returns_data_for_pages_past_its_chunk(rp: Harness) -> None:
    """Inline data comes in HMGETs of at most 4000 members (Lua's unpack limit): several arrays."""
    b = board(rp)
    rp.call(b.submit_many([(f"m{i:05}", float(i), i) for i in range(4500)]))
    op = core.read_op(b._spec, b._spec.board_view, "range", 0, 4499, True)
    reply = rp.run(_one(op))
    assert [len(x) for x in reply[3:]] == [9000, 4000, 500]
    got = core._rows(b._spec, reply[3], 0, 1, [*reply[4], *reply[5]])
    assert [(e.rank, e.member, e.data) for e in got[:2]] == [(1, "m04499", 4499), (2, "m04498", 4498)]


def _one(op: Op) -> Generator[Op, Any, Any]:
    return (yield op)


def test_submit_modes_and_return_values(rp: Harness) -> None:
    b = board(rp, order="asc")  # lower is better: "best" keeps the minimum
    assert rp.call(b.submit("a", 5)) == 5.0
    assert rp.call(b.submit("a", 9)) == 5.0
    assert rp.call(b.submit("a", 3)) == 3.0
    assert rp.call(b.submit("a", 9, "latest")) == 9.0
    assert rp.call(b.submit("a", -0.5, "incr")) == 8.5
    assert rp.call(b.submit_many([("a", 1, {"d": 1}), ("a", 1)], "incr")) == [9.5, 10.5]
    assert rp.call(b.data("a")) == {"d": 1}
    with pytest.raises(ValueError, match="mode"):
        rp.call(b.submit("a", 1, "max"))


def test_single_submits_on_a_board_without_options(rp: Harness) -> None:
    """One submit on a plain board runs the script's short path: same answers as the general one."""
    b = board(rp)  # desc: higher is better
    assert rp.call(b.submit("a", 0.1)) == 0.1  # a new member, the float round-trips exactly
    assert rp.call(b.submit("a", 0.1)) == 0.1  # equal: kept
    assert rp.call(b.submit("a", -3)) == 0.1  # worse: kept
    assert rp.call(b.submit("a", 2.5, data={"v": 1})) == 2.5
    assert rp.call(b.submit("a", 1, "latest", data={"v": 2})) == 1.0
    assert rp.call(b.data("a")) == {"v": 2}
    assert rp.call(b.submit("n", 4, "incr", data={"v": 3})) == 4.0  # incr of a new member
    assert rp.call(b.submit("a", 1e308, "latest")) == 1e308
    with pytest.raises(core.LeaderboardError, match="finite"):
        rp.call(b.submit("a", 1e308, "incr"))  # checked before the write
    assert rp.call(b.score("a")) == 1e308
    assert rp.call(b.submit("a", -1e308, "incr", data={"v": 4})) == 0.0
    assert rp.call(b.data("a")) == {"v": 4}
    assert [(e.member, e.score) for e in rp.call(b.top(5, with_data=False))] == [("n", 4.0), ("a", 0.0)]


# --------------------------------------------------------------------------- tie-break


def test_tie_break_earliest_orders_by_time_and_retimes_increments(rp: Harness) -> None:
    now = [1_800_000_000.0]
    b = board(rp, tie_break="earliest", clock=lambda: now[0])
    for m, s in (("late", 50), ("first", 50), ("low", 10)):
        rp.call(b.submit(m, s))
        now[0] += 1
    rp.call(b.submit("first", 50))  # keep-best: an equal score does not re-time
    rp.call(b.submit("first", 49))  # nor does a worse one
    assert [(e.member, e.score) for e in rp.call(b.top(5))] == [("late", 50), ("first", 50), ("low", 10)]
    now[0] += 1
    assert rp.call(b.submit("low", 40, "incr")) == 50  # reaches 50 last: ranks after the others
    rp.call(b.submit("late", 50, "latest"))  # re-timed to now: behind "low"
    assert [e.member for e in rp.call(b.top(5))] == ["first", "low", "late"]
    assert rp.call(b.rank("late")) == 3 and isinstance(rp.call(b.score("late")), int)
    asc = board(rp, tie_break="earliest", order="asc", clock=lambda: now[0])
    rp.call(asc.submit("a", 3))
    now[0] += 1
    rp.call(asc.submit("b", 3))
    rp.call(asc.submit("c", 2))
    assert [e.member for e in rp.call(asc.top(3))] == ["c", "a", "b"]


def test_tie_break_bounds_and_overflow_before_any_write(rp: Harness) -> None:
    bits = 31
    lo, hi = core.tiebreak_bounds(bits)
    b = board(rp, tie_break="earliest", time_bits=bits, clock=lambda: 1_800_000_000.0)
    assert rp.call(b.submit("hi", hi)) == hi
    assert rp.call(b.submit("lo", lo)) == lo
    assert [e.score for e in rp.call(b.top(2))] == [hi, lo]
    with pytest.raises(ScoreOutOfRange):
        rp.call(b.submit("x", hi + 1))
    with pytest.raises(ScoreOutOfRange):
        rp.call(b.submit_many([("y", 1), ("z", lo - 1)]))
    with pytest.raises(ScoreOutOfRange):  # checked in Lua, before the first write of the batch
        rp.call(b.submit_many([("y", 1, "data"), ("hi", 1)], "incr"))
    assert rp.call(b.count()) == 2 and rp.call(b.score("hi")) == hi and rp.call(b.data("y")) is None
    with pytest.raises(ValueError, match="integer"):
        rp.call(b.submit("y", 1.5))
    early = board(rp, tie_break="earliest", clock=lambda: 1_600_000_000.0)  # before the epoch
    with pytest.raises(core.LeaderboardError, match="clock"):
        rp.call(early.submit("a", 1))
    assert rp.call(early.count()) == 0


# --------------------------------------------------------------------------- windows


def _ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, sec: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, sec, tzinfo=dt.timezone.utc).timestamp()


def test_windows_cross_midnight_week_and_month_on_a_virtual_clock(rp: Harness) -> None:
    now = [_ts(2026, 3, 29, 23, 59, 59)]  # a Sunday, the last day of a week
    b = board(rp, windows=("day", "week", "month"), clock=lambda: now[0])
    rp.call(b.submit("a", 5, "incr"))
    rp.call(b.submit("b", 1, "incr"))
    now[0] = _ts(2026, 3, 30, 0, 0, 1)  # Monday: a new day and week, same month
    rp.call(b.submit("a", 2, "incr"))
    assert rp.call(b.score("a", window="day")) == 2.0
    assert rp.call(b.score("a", window="week")) == 2.0
    assert rp.call(b.score("a", window="month")) == 7.0
    assert rp.call(b.score("b", window="week")) is None
    assert rp.call(b.score("a")) == 7.0
    assert [e.member for e in rp.call(b.top(5, window="month"))] == ["a", "b"]
    now[0] = _ts(2026, 4, 1, 12)
    rp.call(b.submit("b", 10, "incr"))
    assert rp.call(b.count(window="month")) == 1
    assert rp.call(b.count(window="week")) == 2
    assert rp.call(b.remove("a")) == 1  # off the board and the current buckets
    assert rp.call(b.score("a", window="week")) is None and rp.call(b.count(window="week")) == 1
    # rolling: the last 3 days summed / best
    sums = board(rp, windows=("day",), rolling="sum", clock=lambda: now[0])
    for day, v in ((28, 1), (30, 2), (31, 4), (1, 8)):
        now[0] = _ts(2026, 3 if day > 1 else 4, day, 10)
        rp.call(sums.submit("a", v, "incr"))
    assert rp.call(sums.score("a", window="3d")) == 14.0
    assert rp.call(sums.top(1, window="7d")) == [LeaderboardEntry(1, "a", 15.0, None)]
    keys = (
        {k.decode() for k in rp.sync_client.keys("*") if sums.name in k.decode()}
        if not rp.backend.is_cluster
        else set()
    )
    if keys:
        assert any("last3d:2026-04-01:sum" in k for k in keys)
        ttl = rp.sync_client.pttl(next(k for k in keys if "day:2026-04-01" in k))
        assert (14 * 3600 + 32 * 86400 - 60) * 1000 < ttl <= (14 * 3600 + 32 * 86400) * 1000
    with pytest.raises(ValueError, match="not kept"):
        rp.call(sums.top(3, window="week"))
    with pytest.raises(ValueError, match="window"):
        rp.call(sums.top(3, window="fortnight"))


@pytest.mark.parametrize("mode", ["dense", "competition"])
def test_window_views_rank_ties_without_an_index(rp: Harness, mode: str) -> None:
    now = [_ts(2026, 5, 5, 12)]
    b = board(rp, rank_mode=mode, windows=("day",), clock=lambda: now[0])
    scores = {"a": 9.0, "b": 7.0, "c": 7.0, "d": 5.0, "e": 5.0, "f": 1.0}
    rp.call(b.submit_many(scores))
    want = [(r, m) for r, m, _ in oracle(scores, "desc", mode)]
    for view in ("day", "2d"):
        assert [(e.rank, e.member) for e in rp.call(b.top(10, window=view))] == want
        assert [(e.rank, e.member) for e in rp.call(b.page(2, 2, window=view))] == want[2:4]
        assert rp.call(b.rank("f", window=view)) == want[-1][0]
        assert rp.call(b.percentile("b", window=view)) == pytest.approx(100 * 3 / 6)
        assert rp.call(b.count(window=view)) == 6


def test_window_bucket_ids_agree_between_python_and_lua(rp: Harness) -> None:
    spec = core.BoardSpec("ids", Mount().keyspace, Mount().codec, windows=("day", "week", "month"))
    rng = random.Random(3)
    instants = [
        _ts(y, m, 1) + off for y in (1999, 2000, 2024, 2026, 2100) for m in range(1, 13) for off in (-1, 0)
    ]
    instants += [rng.uniform(0, 5e9) for _ in range(40)]
    ops = []
    for t in instants:
        us = int(t * 1_000_000)
        wkeys, wargs = core._window_args(spec, us)
        ops.append(
            Script(
                load("leaderboard_submit"),
                keys=(*spec.board_keys[:2], *wkeys),
                args=(f"desc 0 0 0 1 0 {us} 3", *wargs),
            )
        )

    def flow() -> Generator[Op, Any, list[Any]]:
        out = []
        for op in ops:
            out.append((yield op))
        return out

    replies = rp.run(flow())
    assert [int(r[0]) for r in replies] == [1] * len(instants)


def test_bucket_mismatch_is_detected_and_resent(rp: Harness) -> None:
    b = board(rp, windows=("day", "week"))
    ops = [core.make_op(b._spec, "incr", "a", 3, None, False)]

    def skewed(flow: Generator[Op, Any, Any]) -> Generator[Op, Any, Any]:
        reply = None
        try:
            op = next(flow)
            while True:
                if isinstance(op, WallClock):
                    reply = (yield op) - 3 * 86400  # a client clock three days late
                else:
                    reply = yield op
                op = flow.send(reply)
        except StopIteration as stop:
            return stop.value

    assert rp.run(skewed(core.submit(b._spec, ops))) == [3.0]
    assert rp.call(b.score("a", window="day")) == 3.0
    assert rp.call(b.score("a", window="week")) == 3.0


# --------------------------------------------------------------------------- mount


def test_mount_prefix_ttl_and_read_only(rp: Harness) -> None:
    m = Mount(prefix="game:", ttl=30)
    cls: Any = rp.pick(Leaderboard, AsyncLeaderboard)
    b = cls("arena", mount=m, client=rp.client, rank_mode="dense")
    rp.call(b.submit("a", 1, data={"k": 1}))
    key = b._spec.key("z")
    assert key.startswith("game:lb:{arena}")
    rp.sync_client.persist(b._spec.key("data"))
    rp.call(b.set_data("zed", {"x": 1}))  # HSET + PEXPIRE in one transaction
    assert rp.call(b.data("zed")) == {"x": 1}
    for k in b._spec.board_keys:
        assert 0 < rp.sync_client.pttl(k) <= 30_000
    ro = cls("arena", mount=Mount(prefix="game:", mode="read"), client=rp.client)
    assert rp.call(ro.top(1)) == [LeaderboardEntry(1, "a", 1.0, {"k": 1})]
    with pytest.raises(PermissionError):
        rp.call(ro.submit("a", 2))
    wo = cls("arena", mount=Mount(prefix="game:", mode="write"), client=rp.client)
    with pytest.raises(PermissionError):
        rp.call(wo.top(1))
