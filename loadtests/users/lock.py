"""Locust user for locks: uncontended acquire + release, and a contended hot lock.

A ``LockTimeout`` on the hot lock is reported as a failed request (a waiter starved for 2 s).
"""

from __future__ import annotations

import random

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.lock import Lock


class LockUser(PatternUser):
    pattern = "lock"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.client = connect(self.host)
        self.own = Lock(f"locust:user:{random.randrange(1 << 30)}", ttl=10, client=self.client)
        self.hot = Lock("locust:hot", ttl=2, client=self.client)

    def _cycle(self, lock: Lock, timeout: float | None) -> int:
        held = lock.acquire(timeout=timeout)
        held.release()
        return held.fence

    @task(3)
    def uncontended(self) -> None:
        self.timed("acquire+release (own lock)", self._cycle, self.own, None)

    @task(1)
    def contended(self) -> None:
        self.timed("acquire+release (hot lock, 2 s timeout)", self._cycle, self.hot, 2.0)
