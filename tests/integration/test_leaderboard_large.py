"""A 1,000,000-member board: top-100, around-me, ranks and deep pages take one round trip each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from loadtests.harness import count_round_trips
from redispatterns.leaderboard import AsyncLeaderboard, Leaderboard, LeaderboardEntry

N = 1_000_000
DISTINCT = 1000  # member i scores i % 1000: a thousand members share each score

_BULK = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('ZADD', KEYS[1], i % tonumber(ARGV[3]), 'm' .. i)
end
return redis.call('ZCARD', KEYS[1])
"""


def _load(url: str) -> Leaderboard:
    # a bulk load on a busy 2-core machine can outlast a client's default read timeout
    with redis.Redis.from_url(url, socket_timeout=120) as c:
        board = Leaderboard("huge", rank_mode="competition", client=c)
        key = board._spec.key("z")
        step = 200_000
        for lo in range(0, N, step):  # a Lua bulk loader: 5 calls instead of a million ZADDs
            c.eval(_BULK, 1, key, lo, lo + step - 1, DISTINCT)
        assert c.zcard(key) == N
        c.hset(
            board._spec.key("data"),
            mapping={f"m{i}": board._spec.codec.encode({"i": i}) for i in range(999, N, 1000)},
        )
    return board


def _competition_rank(score: int) -> int:
    return 1 + (DISTINCT - 1 - score) * (N // DISTINCT)


def _check(calls: dict[str, Any]) -> None:
    top = calls["top"]
    assert len(top) == 100 and {e.rank for e in top} == {1} and {e.score for e in top} == {999.0}
    assert all(e.data == {"i": int(e.member[1:])} for e in top)
    around = calls["around"]
    assert len(around) == 25 and "m500123" in [e.member for e in around]
    assert calls["rank"] == _competition_rank(123)
    assert calls["entry"] == LeaderboardEntry(_competition_rank(123), "m500123", 123.0, None)
    assert [e.rank for e in calls["deep"]] == [_competition_rank(e.score) for e in calls["deep"]]
    assert calls["percentile"] == pytest.approx(100.0 * 123 * 1000 / N)


@pytest.mark.slow
def test_one_round_trip_each_on_a_million_members(standalone_url: str) -> None:
    board = _load(standalone_url)
    c = redis.Redis.from_url(standalone_url)
    b = Leaderboard(board.name, rank_mode="competition", client=c)
    b.top(1), b.around("m1", 3)  # scripts loaded, connection made
    reads: dict[str, Callable[[], Any]] = {
        "top": lambda: b.top(100),
        "around": lambda: b.around("m500123", 25),
        "rank": lambda: b.rank("m500123"),
        "entry": lambda: b.entry("m500123"),
        "deep": lambda: b.page(9000, 100),
        "percentile": lambda: b.percentile("m500123"),
    }
    got: dict[str, Any] = {}
    for name, fn in reads.items():
        with count_round_trips() as rt:
            got[name] = fn()
        assert rt.n == 1, f"{name} took {rt.n} round trips"
    _check(got)
    with count_round_trips() as rt:
        # standard ranks (one ZREVRANK): ties in reverse byte order, and "m999999" sorts last
        assert Leaderboard(board.name, client=c).rank("m999999") == 1
    assert rt.n == 1
    c.close()

    async def run_async() -> None:
        ac = redis.asyncio.Redis.from_url(standalone_url)
        ab = AsyncLeaderboard(board.name, rank_mode="competition", client=ac)
        await ab.top(1)
        await ab.around("m1", 3)
        areads: dict[str, Callable[[], Awaitable[Any]]] = {
            "top": lambda: ab.top(100),
            "around": lambda: ab.around("m500123", 25),
            "rank": lambda: ab.rank("m500123"),
            "entry": lambda: ab.entry("m500123"),
            "deep": lambda: ab.page(9000, 100),
            "percentile": lambda: ab.percentile("m500123"),
        }
        agot: dict[str, Any] = {}
        for name, fn in areads.items():
            with count_round_trips() as art:
                agot[name] = await fn()
            assert art.n == 1, f"async {name} took {art.n} round trips"
        _check(agot)
        await ac.aclose()

    asyncio.run(run_async())


@pytest.mark.slow
def test_pages_of_a_100k_board_concatenate_to_the_full_order(standalone_url: str) -> None:
    n, distinct = 100_000, 997
    with redis.Redis.from_url(standalone_url) as c:
        b = Leaderboard("pages", rank_mode="dense", client=c)
        b.submit_many([(f"m{i}", float(i % distinct)) for i in range(2000)])  # through the script
        c.eval(_BULK, 1, b._spec.board_keys[0], 2000, n - 1, distinct)  # the rest by hand...
        # ... so rebuild the dense index the submit script keeps, from the scores
        c.delete(b._spec.board_keys[2], b._spec.board_keys[3])
        values = [f"{float(s):.17g}" for s in range(distinct)]
        c.zadd(b._spec.board_keys[2], {v: float(v) for v in values})
        per_score = [len(range(s, n, distinct)) for s in range(distinct)]
        c.hset(b._spec.board_keys[3], mapping=dict(zip(values, per_score, strict=True)))
        rows: list[LeaderboardEntry] = []
        page = 1
        while True:
            got = b.page(page, 1000, with_data=False)
            if not got:
                break
            rows += got
            page += 1
        full = c.zrevrange(b._spec.board_keys[0], 0, -1, withscores=True)
        assert [(e.member, e.score) for e in rows] == [(m.decode(), s) for m, s in full]
        assert [e.rank for e in rows] == [distinct - int(s) for _, s in full]  # dense: one rank per score
        assert page == n // 1000 + 1
