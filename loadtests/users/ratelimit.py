"""Locust user for rate limiters: many subjects on the admitted path, one hot subject denied,
and a two-policy limiter; denials are answers, not failures."""

from __future__ import annotations

import random

from locust import constant, task

from loadtests.users.base import PatternUser
from redispatterns.client import connect
from redispatterns.ratelimit import MultiLimiter, Policy, SlidingWindowLimiter, TokenBucketLimiter


class RateLimitUser(PatternUser):
    pattern = "ratelimit"
    wait_time = constant(0)

    def on_start(self) -> None:
        client = connect(self.host)
        self.sliding = SlidingWindowLimiter(100, 60, client=client, name="locust")
        self.bucket = TokenBucketLimiter(50, 100, client=client, name="locust")
        self.multi = MultiLimiter([Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)], client=client,
                                  name="locust")  # fmt: skip

    @task(4)
    def sliding_hit(self) -> None:
        self.timed("sliding hit", self.sliding.hit, f"user:{random.randrange(10_000)}")

    @task(4)
    def bucket_hit(self) -> None:
        self.timed("token bucket hit", self.bucket.hit, f"user:{random.randrange(10_000)}")

    @task(1)
    def hot_subject(self) -> None:
        self.timed("hot subject (denied)", self.sliding.hit, "hot")

    @task(1)
    def multi_hit(self) -> None:
        self.timed("10/s + 1000/h hit", self.multi.hit, f"tenant:{random.randrange(100)}")
