"""Locust user for the session store: a login, then mostly reads, some writes and events."""

from __future__ import annotations

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.mount import Mount
from redispatterns.session import SessionStore


class SessionUser(PatternUser):
    pattern = "session"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.store = SessionStore(connect(self.host), mount=Mount(prefix="locust:sess:"), ttl=1800)
        self.user_id = f"user:{id(self)}"
        self.token = self.store.create(self.user_id, {"cart": [], "theme": "dark"}) or ""

    @task(10)
    def get(self) -> None:
        self.timed("get (sliding)", self.store.get, self.token)

    @task(3)
    def update(self) -> None:
        self.timed("update one field", self.store.update, self.token, {"theme": "light"})

    @task(2)
    def event(self) -> None:
        self.timed("append_event", self.store.append_event, self.token, {"type": "click"})

    @task(1)
    def rotate(self) -> None:
        new = self.timed("rotate", self.store.rotate, self.token)
        if new:
            self.token = new

    def on_stop(self) -> None:
        self.timed("destroy_all", self.store.destroy_all, self.user_id)
