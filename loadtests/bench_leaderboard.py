"""Leaderboard reads and writes vs the same commands sent by hand with redis-py.

A 100,000-member board (a thousand members per score, so competition ranks have ties) with
member data. Floors: the single raw command a caller would send when it is enough (ZREVRANGE,
ZREVRANK, ZADD GT), and the two round trips by hand where one is not (data, around-me, windows).
The ``leaderboard`` package (agoragames/WB-Games 3.7.3) runs side by side when installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns.client import connect_async
from redispatterns.leaderboard import AsyncLeaderboard, Leaderboard

N = 100_000
ME = "m54321"
_BULK = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('ZADD', KEYS[1], i % 1000, 'm' .. i)
end
"""
_created: list[Any] = []


def _fill(raw: redis.Redis, zkey: str, dkey: str, encode: Any) -> None:
    raw.delete(zkey, dkey)
    raw.eval(_BULK, 1, zkey, 0, N - 1)
    raw.hset(dkey, mapping={f"m{i}": encode({"name": f"player {i}", "level": i % 70}) for i in range(N)})


def cases(url: str) -> list[BenchCase]:
    raw = redis.Redis.from_url(url)
    _created.append(raw)
    board = Leaderboard("bench", client=raw)
    comp = Leaderboard("bench", rank_mode="competition", client=raw)
    windowed = Leaderboard("bench-w", windows=("day", "week", "month"), client=raw)
    plain = Leaderboard("bench-s", client=raw)
    zkey, dkey = board._spec.key("z"), board._spec.key("data")
    _fill(raw, zkey, dkey, board._spec.codec.encode)
    counter = iter(range(10**9))

    def top_by_hand() -> Any:
        rows: Any = raw.zrevrange(zkey, 0, 9, withscores=True)
        return rows, raw.hmget(dkey, [m for m, _ in rows])

    def around_by_hand() -> Any:
        r: Any = raw.zrevrank(zkey, ME)
        start = max(0, r - 5)
        rows: Any = raw.zrevrange(zkey, start, start + 9, withscores=True)
        return rows, raw.hmget(dkey, [m for m, _ in rows])

    def competition_by_hand() -> Any:
        s = raw.zscore(zkey, ME)
        return raw.zcount(zkey, f"({s}", "+inf") + 1

    def submit_windows_by_hand() -> Any:
        i = next(counter)
        pipe = raw.pipeline(transaction=False)
        for k in ("z", "day:x", "week:x", "month:x"):
            pipe.zadd(f"hand:{{bench-w}}:{k}", {f"m{i % 5000}": i}, gt=True)
        for k in ("day:x", "week:x", "month:x"):
            pipe.pexpire(f"hand:{{bench-w}}:{k}", 86_400_000)
        return pipe.execute()

    aboard: dict[str, Any] = {}

    async def atop() -> Any:
        if "b" not in aboard:
            aboard["b"] = AsyncLeaderboard("bench", client=connect_async(url))  # what users get
        return await aboard["b"].top(10)

    async def atop_floor() -> Any:
        if "f" not in aboard:
            aboard["f"] = redis.asyncio.Redis.from_url(url)
        return await aboard["f"].zrevrange(zkey, 0, 9, withscores=True)

    out = [
        BenchCase("leaderboard", "top-10 with data vs ZREVRANGE alone", lambda: board.top(10),
                  lambda: raw.zrevrange(zkey, 0, 9, withscores=True),
                  note="floor reads no member data: the cost of ranks + data in the same round trip"),
        BenchCase("leaderboard", "top-10 with data vs ZREVRANGE+HMGET by hand", lambda: board.top(10),
                  top_by_hand),
        BenchCase("leaderboard", "top-10 without data vs ZREVRANGE", lambda: board.top(10, with_data=False),
                  lambda: raw.zrevrange(zkey, 0, 9, withscores=True)),
        BenchCase("leaderboard", "rank (standard) vs ZREVRANK", lambda: board.rank(ME),
                  lambda: raw.zrevrank(zkey, ME)),
        BenchCase("leaderboard", "rank (competition) vs ZSCORE+ZCOUNT", lambda: comp.rank(ME),
                  competition_by_hand),
        BenchCase("leaderboard", "around-me 10 with data vs 3 commands", lambda: board.around(ME, 10),
                  around_by_hand),
        BenchCase("leaderboard", "page 500 of 10 with data vs ZREVRANGE", lambda: board.page(500, 10),
                  lambda: raw.zrevrange(zkey, 4990, 4999, withscores=True)),
        BenchCase("leaderboard", "submit best vs ZADD GT",
                  lambda: plain.submit(f"m{next(counter) % 5000}", 7),
                  lambda: raw.zadd("hand:{bench-s}:z", {f"m{next(counter) % 5000}": 7}, gt=True)),
        BenchCase("leaderboard", "submit + 3 windows vs pipelined ZADD GT x4",
                  lambda: windowed.submit(f"m{next(counter) % 5000}", next(counter)), submit_windows_by_hand,
                  note="floor: 4 ZADD GT + 3 PEXPIRE in one pipeline, no server-clock bucket check"),
        BenchCase("leaderboard", "top-10 with data (async) vs ZREVRANGE", atop, atop_floor, is_async=True),
    ]  # fmt: skip
    out += _top_cases(url, raw, board, zkey, dkey)
    out += _peer_cases(raw, url, zkey, dkey)
    return out


def _top_cases(url: str, raw: redis.Redis, board: Leaderboard, zkey: str, dkey: str) -> list[BenchCase]:
    """top(N) with member data at N = 10 / 100 / 1000 / 10000 against the same work by hand:
    ZREVRANGE ... WITHSCORES, HMGET of the members, orjson.loads of each value."""
    loads = orjson.loads
    state: dict[str, Any] = {}

    def on_loop() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:  # each async case runs its own event loop
            state["loop"] = loop
            state["board"] = AsyncLeaderboard("bench", client=connect_async(url))
            state["raw"] = redis.asyncio.Redis.from_url(url)
        return state["board"], state["raw"]

    out = []
    for n in (10, 100, 1000, 10_000):

        def by_hand(n: int = n) -> Any:
            rows: Any = raw.zrevrange(zkey, 0, n - 1, withscores=True)
            data: Any = raw.hmget(dkey, [m for m, _ in rows])
            return [(m, s, loads(d)) for (m, s), d in zip(rows, data, strict=True)]

        def top(n: int = n) -> Any:
            return board.top(n)

        async def atop(n: int = n) -> Any:
            return await on_loop()[0].top(n)

        async def aby_hand(n: int = n) -> Any:
            r = on_loop()[1]
            rows: Any = await r.zrevrange(zkey, 0, n - 1, withscores=True)
            data: Any = await r.hmget(dkey, [m for m, _ in rows])
            return [(m, s, loads(d)) for (m, s), d in zip(rows, data, strict=True)]

        calls = max(24, min(3000, 60_000 // n))
        note = "1 round trip up to 256 rows, then rows + one HMGET; floor: ZREVRANGE + HMGET + loads"
        out += [
            BenchCase("leaderboard", f"top with data N={n}", top, by_hand,
                      calls=calls, note=note),
            BenchCase("leaderboard", f"top with data N={n}", atop, aby_hand, is_async=True, calls=calls),
        ]  # fmt: skip
    return out


def _peer_cases(raw: redis.Redis, url: str, zkey: str, dkey: str) -> list[BenchCase]:
    try:
        from leaderboard.leaderboard import Leaderboard as Peer
    except ImportError:
        return []
    peer_raw = redis.Redis.from_url(url, decode_responses=True)
    _created.append(peer_raw)
    peer = Peer("peerbench", redis_connection=peer_raw, page_size=10)
    raw.delete("peerbench", "peerbench:member_data")
    raw.eval(_BULK, 1, "peerbench", 0, N - 1)
    raw.hset("peerbench:member_data", mapping={f"m{i}": f'{{"name": "player {i}"}}' for i in range(N)})
    ours = Leaderboard("bench", client=raw)
    return [
        BenchCase("leaderboard", "PEER leaderboard.leaders(page 1, data)",
                  lambda: peer.leaders(1, page_size=10, with_member_data=True),
                  lambda: raw.zrevrange(zkey, 0, 9, withscores=True),
                  note="leaderboard 3.7.3: ZREVRANGE, then a pipeline of ZREVRANK+ZSCORE, then HMGET"),
        BenchCase("leaderboard", "PEER leaderboard.around_me(10, data)",
                  lambda: peer.around_me(ME, page_size=10, with_member_data=True),
                  lambda: ours.around(ME, 10)),
    ]  # fmt: skip


def teardown() -> None:
    for c in _created:
        c.close()
    _created.clear()


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
