"""Wrong user code around leaderboards: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

board = rp.Leaderboard("arena", rank_mode="olympic")  # E: Argument "rank_mode"
board.submit("ada", 1, mode="max")  # E: Argument "mode"
board.submit_many([("ada", "high")])  # E: List item 0 has incompatible type
first: str = board.top(1)[0].rank  # E: Incompatible types in assignment
maybe: rp.LeaderboardEntry = board.entry("ada")  # E: Incompatible types in assignment
