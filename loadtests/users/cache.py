"""Locust user for @cached: mostly hits on a hot set, some cold misses, some write-throughs."""

from __future__ import annotations

import random
from typing import Any

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.cache import cached, write_through
from redispatterns.client import connect

PAYLOAD = {"name": "Ada", "roles": ["admin"], "score": 9.5}


class CacheUser(PatternUser):
    pattern = "cache"
    wait_time = constant(0)

    def on_start(self) -> None:
        client = connect(self.host)

        @cached(ttl=30, client=client, name="locust.profile")
        def profile(user_id: int) -> dict[str, Any]:
            return {"id": user_id, **PAYLOAD}

        @write_through(profile)
        def save(user_id: int) -> dict[str, Any]:
            return {"id": user_id, **PAYLOAD}

        self.profile = profile
        self.save = save

    @task(20)
    def hit(self) -> None:
        self.timed("hit (hot set of 100)", self.profile, random.randrange(100))

    @task(2)
    def miss(self) -> None:
        self.timed("cold miss", self.profile, random.randrange(100, 10**9))

    @task(1)
    def write(self) -> None:
        self.timed("write-through", self.save, random.randrange(100))
