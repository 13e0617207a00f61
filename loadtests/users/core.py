"""Locust user for the runner itself: GETs and a Lua call through flows."""

from __future__ import annotations

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns._core.clock import server_time_us
from redispatterns._core.ops import Command, Flow
from redispatterns._runner import run_sync
from redispatterns.client import connect


def _get(key: str) -> Flow[object]:
    return (yield Command("GET", key))


class CoreUser(PatternUser):
    pattern = "core"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.client = connect(self.host)

    @task(3)
    def get(self) -> None:
        self.timed("GET via run_sync", run_sync, self.client, _get("locust:core"))

    @task(1)
    def lua(self) -> None:
        self.timed("core_time script", run_sync, self.client, server_time_us())
