"""Locust user for leaderboards: submits (with windows) mixed with top-N, around-me and rank reads."""

from __future__ import annotations

import random

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.leaderboard import Leaderboard

PLAYERS = 100_000


class LeaderboardUser(PatternUser):
    pattern = "leaderboard"
    wait_time = constant(0)

    def on_start(self) -> None:
        client = connect(self.host)
        self.board = Leaderboard("locust", rank_mode="competition", windows=("day", "week"), client=client)

    def _player(self) -> str:
        return f"p{random.randrange(PLAYERS)}"

    @task(4)
    def submit(self) -> None:
        self.timed("submit best + 2 windows", self.board.submit, self._player(), random.randrange(10_000))

    @task(1)
    def incr(self) -> None:
        self.timed("submit incr", self.board.submit, self._player(), 1, "incr")

    @task(3)
    def top(self) -> None:
        self.timed("top 10 with data", self.board.top, 10)

    @task(2)
    def around(self) -> None:
        self.timed("around-me 10", self.board.around, self._player(), 10)

    @task(2)
    def rank(self) -> None:
        self.timed("rank (competition)", self.board.rank, self._player())

    @task(1)
    def weekly(self) -> None:
        self.timed("top 10 this week", self.board.top, 10, window="week")
