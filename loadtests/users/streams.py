"""Locust user for streams: producers adding (some idempotent), consumers of one group draining.

Every user both produces and consumes on one shared stream and group, so concurrent consumers
compete for entries the way a worker pool does; a read batch is handled and acked as one request.
"""

from __future__ import annotations

import itertools

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.mount import Mount
from redispatterns.streams import Consumer, Stream, StreamMessage

_ids = itertools.count()


class StreamsUser(PatternUser):
    pattern = "streams"
    wait_time = constant(0)

    def on_start(self) -> None:
        n = next(_ids)
        self.stream = Stream(
            "events", client=connect(self.host), mount=Mount(prefix="locust:"), maxlen=100_000
        )
        self.consumer = Consumer(self.stream, "workers", f"locust-{n}", count=50, block=0.05, min_idle=10)
        self.n = n * 1_000_000

    @task(5)
    def add(self) -> None:
        self.timed("add", self.stream.add, {"user": self.n, "action": "click"})

    @task(1)
    def add_idempotent(self) -> None:
        self.n += 1
        self.timed("add idempotent", self.stream.add, {"user": self.n}, idempotency_key=f"e{self.n}")

    @task(3)
    def consume(self) -> None:
        self.timed("read + handle + ack batch", self._drain)

    def _drain(self) -> int:
        msgs: list[StreamMessage] = self.consumer.read()
        for m in msgs:
            _ = m.fields
        return self.consumer.ack(*msgs) if msgs else 0

    @task(1)
    def metrics(self) -> None:
        self.timed("metrics", self.stream.metrics, "workers")

    def on_stop(self) -> None:
        self.consumer.stop()
