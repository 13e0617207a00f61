"""Locust user for pub/sub: numbered publishes, and publish-to-delivery through a Subscriber."""

from __future__ import annotations

from typing import Any

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.pubsub import Publisher, Subscriber


class PubSubUser(PatternUser):
    pattern = "pubsub"
    wait_time = constant(0)

    def on_start(self) -> None:
        client = connect(self.host)
        self.pub = Publisher(client=client)
        self.sub = Subscriber([f"locust-{id(self)}"], client=client, maxsize=1000).start()

    def on_stop(self) -> None:
        self.sub.close()

    @task(3)
    def publish(self) -> None:
        self.timed("publish (numbered)", self.pub.publish, "locust-fanout", {"n": 1})

    @task(1)
    def round_trip(self) -> None:
        self.timed("publish -> delivered", self._round_trip)

    def _round_trip(self) -> Any:
        self.pub.publish(f"locust-{id(self)}", {"n": 1})
        msg = self.sub.get(timeout=5)
        if msg is None:
            raise TimeoutError("message not delivered within 5 s")
        return msg
