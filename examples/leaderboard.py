"""Leaderboards: scores with member data, rank modes, around-me, time windows, tie-breaks.

REDIS_URL=redis://localhost:6379/0 python examples/leaderboard.py
"""

from __future__ import annotations

import time
import uuid

import redispatterns as rp
from redispatterns.leaderboard import Leaderboard


def main() -> None:
    client = rp.connect()  # $REDIS_URL
    mount = rp.Mount(prefix=f"example:{uuid.uuid4().hex[:8]}:")  # a private corner for this run
    board = Leaderboard("arena", rank_mode="competition", windows=("day", "week"), mount=mount, client=client)

    board.submit("ada", 120, data={"country": "UK"})
    board.submit_many({"bob": 95, "cyd": 120, "dee": 80, "eve": 95})
    board.submit("dee", 70)  # mode="best" keeps 80
    board.submit("eve", 10, mode="incr")  # 105
    for e in board.top(3):  # ranks, scores and data in one round trip
        print(f"#{e.rank} {e.member:<4} {e.score:>6} {e.data or ''}")
    print("around bob:", [(e.rank, e.member) for e in board.around("bob", 3)])
    print("dee is rank", board.rank("dee"), "and beats", board.percentile("dee"), "% of the board")
    print("this week:", [(e.member, e.score) for e in board.top(2, window="week")])

    # millisecond ticks; 40 bits of them last 34 years and leave scores in [-8192, 8191]
    race = Leaderboard(
        "race", tie_break="earliest", tie_break_tick=0.001, time_bits=40, mount=mount, client=client
    )
    race.submit("zoe", 42)
    time.sleep(0.005)
    race.submit("amy", 42)  # same score, later: ranks behind zoe (not by name)
    print("tie-break:", [e.member for e in race.top(2)])


if __name__ == "__main__":
    main()
