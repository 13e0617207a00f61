"""Locust user for the kv facade: mostly reads, some writes and merges, an occasional listing."""

from __future__ import annotations

import random

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns import Mount
from redispatterns.client import connect
from redispatterns.kv import KV

MOUNTS = {"user": Mount(prefix="locust:kv:", ttl=600, max_entries=5000)}


class KVUser(PatternUser):
    pattern = "kv"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.kv = KV(connect(self.host), MOUNTS, write_policy="immediate")

    def _key(self) -> str:
        return f"user{random.randrange(1000)}"

    @task(8)
    def get(self) -> None:
        self.timed("get", self.kv.get, "user", self._key())

    @task(3)
    def set(self) -> None:
        self.timed("set", self.kv.set, "user", self._key(), {"n": random.randrange(100)})

    @task(1)
    def merge(self) -> None:
        self.timed("merge", self.kv.merge, "user", self._key(), {"seen": random.randrange(100)})

    @task(1)
    def keys_page(self) -> None:
        self.timed("keys page", self.kv.keys, "user", limit=50)
