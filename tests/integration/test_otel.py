"""OpenTelemetry spans and metrics for every pattern, seen by the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import redispatterns as rp
from redispatterns import _runner, otel
from redispatterns.testing.plugin import Backend

SECRET = "subject-7f3a"  # a key's user data: must never show up in an attribute


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        otel.instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider([self.reader]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def names(self) -> set[str]:
        return {s.name for s in self.finished()}

    def outcomes(self, name: str) -> list[str]:
        return [
            str((s.attributes or {}).get("redispatterns.outcome")) for s in self.finished() if s.name == name
        ]

    def metric(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            point: Any = p  # a number (counter, gauge) or a histogram (count)
                            value = point.value if hasattr(point, "value") else point.count
                            out.append((dict(point.attributes or {}), value))
        return out


@pytest.fixture
def tel() -> Iterator[Telemetry]:
    t = Telemetry()
    try:
        yield t
    finally:
        otel.uninstrument()


def test_spans_and_metrics_for_every_pattern(backend: Backend, tel: Telemetry) -> None:
    client = backend.sync_client()
    mount = rp.Mount(prefix="otel:")
    calls: list[str] = []

    @rp.cached(ttl=60, client=client, mount=mount)
    def profile(user: str) -> dict[str, str]:
        calls.append(user)
        return {"name": user}

    profile(SECRET)
    profile(SECRET)
    assert tel.outcomes("cache.get") == ["miss", "hit"] and tel.outcomes("cache.fill") == ["miss"]

    limiter = rp.SlidingWindowLimiter(1, 60, client=client, mount=mount)
    limiter.hit(SECRET)
    limiter.hit(SECRET)
    assert tel.outcomes("ratelimit.hit") == ["allowed", "denied"]

    lock = rp.Lock(SECRET, ttl=5, client=client, mount=mount)
    with lock:
        time.sleep(0.05)
    assert rp.Lock(SECRET, ttl=5, client=client, mount=mount).acquire(blocking=False) is not None
    with pytest.raises(rp.LockTimeout):
        rp.Lock(SECRET, ttl=5, client=client, mount=mount).acquire(timeout=0.05)
    assert tel.outcomes("lock.acquire") == ["acquired", "acquired", "timed_out"]
    sem = rp.Semaphore(SECRET, 2, client=client, mount=mount)
    with sem:
        pass
    assert tel.outcomes("semaphore.semaphore_acquire") == ["acquired"]

    store = rp.SessionStore(client, mount=mount)
    token = store.create(SECRET, {"cart": []})
    assert store.get(token) is not None and store.get("x" * 43) is None
    assert tel.outcomes("session.get") == ["ok", "none"]

    kv = rp.KV(client, mounts={"app": rp.Mount(prefix="otel:kv:")})
    kv.set("app", SECRET, 1)
    kv.get("app", SECRET)
    board = rp.Leaderboard("best", client=client, mount=mount)
    board.submit(SECRET, 10)
    board.top(3)
    rp.publish("news", {"n": 1}, client=client, mount=mount)
    stream = rp.Stream("orders", client=client, mount=mount)
    consumer = rp.Consumer(stream, "workers", "w1")
    consumer.ensure_group()
    stream.add({"n": 1})
    stream.add({"n": 2})
    consumer.read(count=1, block=0.1)
    seen = consumer.metrics()
    assert seen.pending == 1 and seen.lag is not None
    patterns = {str((s.attributes or {}).get("redispatterns.pattern")) for s in tel.finished()}
    assert {
        "cache",
        "ratelimit",
        "lock",
        "semaphore",
        "session",
        "kv",
        "leaderboard",
        "pubsub",
        "streams",
    } <= patterns

    for span in tel.finished():
        attrs = span.attributes or {}
        assert span.kind.name == "CLIENT" and attrs["db.system.name"] == "redis"
        assert not any(SECRET in str(v) or token in str(v) for v in attrs.values()), (span.name, attrs)
    prefixes = {(s.attributes or {}).get("redispatterns.key_prefix") for s in tel.finished()}
    assert "otel:" in prefixes  # the mount's prefix, not the key
    timed_out = [s for s in tel.finished() if s.name == "lock.acquire"][-1]
    assert timed_out.status.is_ok and (timed_out.attributes or {})["error.type"] == "LockTimeout"

    assert sorted(v for a, v in tel.metric("redispatterns.cache.requests")) == [1, 1]
    assert {a["redispatterns.outcome"] for a, _ in tel.metric("redispatterns.cache.requests")} == {
        "hit",
        "miss",
    }
    decisions = {a["redispatterns.allowed"]: v for a, v in tel.metric("redispatterns.ratelimit.decisions")}
    assert decisions == {True: 1, False: 1}
    waits = {
        (a["redispatterns.pattern"], a["redispatterns.outcome"]): n
        for a, n in tel.metric("redispatterns.lock.wait")
    }
    assert waits == {("lock", "acquired"): 2, ("lock", "timed_out"): 1, ("semaphore", "acquired"): 1}
    holds = {a["redispatterns.pattern"]: n for a, n in tel.metric("redispatterns.lock.hold")}
    assert holds == {"lock": 1, "semaphore": 1}
    where = {"redispatterns.stream": "orders", "redispatterns.group": "workers"}
    assert tel.metric("redispatterns.stream.lag") == [(where, seen.lag)]
    assert tel.metric("redispatterns.stream.pending") == [(where, 1)]
    assert tel.metric("redispatterns.stream.dead_letters") == [(where, 0)]
    assert calls == [SECRET]


def test_async_spans_nest_under_the_callers_span(backend: Backend, tel: Telemetry) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("app", tracer_provider=None)

    async def body() -> None:
        client = backend.async_client()
        limiter = rp.AsyncTokenBucketLimiter(
            rate=1, capacity=1, client=client, mount=rp.Mount(prefix="otel:")
        )
        with tracer.start_as_current_span("request"):
            await limiter.hit(SECRET)
        await client.aclose()

    asyncio.run(body())
    (span,) = [s for s in tel.finished() if s.name == "ratelimit.hit"]
    assert (span.attributes or {})["redispatterns.outcome"] == "allowed"


def test_subscriber_gaps_are_counted(backend: Backend, tel: Telemetry) -> None:
    client = backend.sync_client()
    sub = rp.Subscriber(["ticks"], client=client, maxsize=1, overflow="drop_oldest")
    with sub:
        for i in range(5):
            rp.publish("ticks", i, client=client)
        deadline = time.monotonic() + 5
        while sub.stats.dropped < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        msg = sub.get(timeout=2)  # the overflow gap is reported on the way to the next message
    assert msg is not None and msg.data == 4 and sub.stats.gaps >= 1
    assert sum(v for _, v in tel.metric("redispatterns.pubsub.gaps")) == sub.stats.gaps


def test_uninstrument_restores_the_runners() -> None:
    import redispatterns.cache as cache_mod

    original = _runner.run_sync
    otel.instrument()
    assert otel.is_instrumented() and vars(cache_mod)["run_sync"] is not original
    otel.instrument()  # idempotent: not wrapped twice
    assert _runner.run_sync.__name__ == "run_sync" and _runner.run_sync is not original
    otel.uninstrument()
    assert not otel.is_instrumented() and vars(cache_mod)["run_sync"] is original
    assert _runner.run_sync is original


def test_breaker_state_of_a_cached_function(tel: Telemetry) -> None:
    from redispatterns.testing.servers import free_port

    dead = rp.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    breaker = rp.CircuitBreaker(threshold=1, reset_after=3600)

    @rp.cached(ttl=60, client=dead, breaker=breaker, name="otel.dead")
    def plain(n: int) -> int:
        return n * 2

    assert tel.metric("redispatterns.cache.breaker_state") == []  # nothing failed yet
    assert plain(1) == 2 and plain(2) == 4  # fails open: the function's own result
    assert tel.metric("redispatterns.cache.breaker_state") == [({"redispatterns.function": "otel.dead"}, 2)]
    assert {a["redispatterns.outcome"] for a, _ in tel.metric("redispatterns.cache.requests")} >= {"bypass"}
