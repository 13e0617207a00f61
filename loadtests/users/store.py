"""Locust user for key-value stores: reads and writes with metadata, key pages, and re-opens by name."""

from __future__ import annotations

import random

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns import KeyValueStore, Mount
from redispatterns.client import connect

MOUNT = Mount(prefix="locust:")


class StoreUser(PatternUser):
    pattern = "store"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.store = KeyValueStore.open(name="locust", client=connect(self.host), mount=MOUNT)

    def _key(self) -> str:
        return f"item{random.randrange(1000):03}"

    @task(8)
    def get_value(self) -> None:
        self.timed("get_value", self.store.get_value, self._key())

    @task(3)
    def set_value(self) -> None:
        self.timed("set_value", self.store.set_value, self._key(), {"n": random.randrange(100)})

    @task(1)
    def keys_page(self) -> None:
        self.timed("iterate_keys 50", lambda: list(self.store.iterate_keys(limit=50)))

    @task(1)
    def reopen(self) -> None:
        self.timed(
            "open(name=)", lambda: KeyValueStore.open(name="locust", client=self.store.client, mount=MOUNT)
        )
