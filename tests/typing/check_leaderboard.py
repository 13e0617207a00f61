"""User code around leaderboards that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import redispatterns as rp


def use() -> None:
    board = rp.Leaderboard("arena", order="asc", rank_mode="competition", windows=("day", "week"))
    assert_type(board.submit("ada", 120, data={"country": "UK"}), float | int | None)
    assert_type(board.submit("bob", 5, mode="incr"), float | int | None)
    assert_type(board.submit_many({"cyd": 1.5, "dee": 2}), list[float | int | None])
    assert_type(board.submit_many([("eve", 3), ("fay", 4, {"x": 1})]), list[float | int | None])
    top = board.top(10)
    assert_type(top, list[rp.LeaderboardEntry])
    for entry in top:
        assert_type(entry.rank, int)
        assert_type(entry.member, str)
        assert_type(entry.score, float | int)
        assert_type(entry.data, Any)
    assert_type(board.page(2, 20, window="7d"), list[rp.LeaderboardEntry])
    assert_type(board.around("ada", 5, with_data=False), list[rp.LeaderboardEntry])
    assert_type(board.entry("ada"), rp.LeaderboardEntry | None)
    assert_type(board.rank("ada"), int | None)
    assert_type(board.score("ada", window="week"), float | int | None)
    assert_type(board.percentile("ada"), float | None)
    assert_type(board.count(), int)
    assert_type(board.remove("ada", "bob"), int)


async def use_async() -> None:
    board = rp.AsyncLeaderboard("arena", tie_break="earliest")
    assert_type(await board.top(10), list[rp.LeaderboardEntry])
    assert_type(await board.entry("ada"), rp.LeaderboardEntry | None)
    assert_type(await board.submit("ada", 3), float | int | None)
