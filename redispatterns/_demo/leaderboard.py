"""Tour: a leaderboard with member data, three rank modes, around-me and time windows."""

from __future__ import annotations

from collections.abc import Callable

ORDER = 70
TITLE = "Leaderboards: rank modes, around-me, windows, tie-breaks"


def tour(url: str, say: Callable[[str], None]) -> None:
    import time

    import redispatterns as rp
    from redispatterns.leaderboard import Leaderboard

    client = rp.connect(url)
    mount = rp.Mount(prefix="demo:")
    scores = {"ada": 120, "bob": 95, "cyd": 120, "dee": 80, "eve": 95}
    for mode in ("standard", "competition", "dense"):
        board = Leaderboard(f"arena-{mode}", rank_mode=mode, mount=mount, client=client)
        board.submit_many(scores, mode="latest")
        shown = ", ".join(f"{e.rank}.{e.member}({e.score:g})" for e in board.top(5))
        say(f"{mode:>11} ranks: {shown}")
    board = Leaderboard("arena", windows=("day", "week"), mount=mount, client=client)
    board.submit_many([(m, s, {"level": len(m) * s % 50}) for m, s in scores.items()], mode="latest")
    say("one script run per submit updates the board, its day and week buckets (with TTLs);")
    say(f"  every key shares the board's hash tag: {board._spec.key('z')}, {board._spec.key('data')}")
    e = board.entry("dee")
    say(f"dee: {e}; percentile {board.percentile('dee'):.0f} (share of the board ranked strictly worse)")
    say(f"around bob (3): {[(x.rank, x.member) for x in board.around('bob', 3)]}  (clamped at both ends)")
    say(f"this week's top 2: {[(x.member, x.score) for x in board.top(2, window='week')]}")
    race = Leaderboard(
        "race", tie_break="earliest", mount=mount, client=client, tie_break_tick=0.001, time_bits=40
    )
    race.submit("zoe", 42)
    time.sleep(0.005)  # a later millisecond tick
    race.submit("amy", 42)
    say(f"tie_break='earliest': equal scores rank by who got there first: {[x.member for x in race.top(2)]}")
