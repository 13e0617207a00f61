"""The worker-grade consumer on every backend and flavour: concurrency, ordering by key, delayed
entries, retry backoff, failure logs and the on_error hook (real threads / tasks, real servers)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Any

import pytest

from redispatterns import Backoff
from redispatterns.streams import AsyncConsumer, AsyncStream, Consumer, Stream
from redispatterns.testing.plugin import Harness

FAST: dict[str, Any] = {"block": 0.05, "min_idle": 0.5, "reclaim_interval": 0.05}


def _stream(rp: Harness, name: str = "jobs", **kw: Any) -> Any:
    return rp.pick(Stream, AsyncStream)(name, client=rp.client, **kw)


def _consumer(rp: Harness, stream: Any, name: str = "w", **kw: Any) -> Any:
    return rp.pick(Consumer, AsyncConsumer)(stream, "g", name, **{**FAST, **kw})


def _pending(rp: Harness, stream: Any) -> int:
    return int(rp.sync_client.xpending(stream.key, "g")["pending"])


class Tracker:
    """Records what handlers did, and how many ran at once (overall and per key)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.by_key: dict[Any, int] = {}
        self.key_overlap = False
        self.order: list[tuple[Any, int]] = []
        self.overlapped = threading.Event()

    def enter(self, key: Any) -> None:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            if self.most > 1:
                self.overlapped.set()
            self.by_key[key] = self.by_key.get(key, 0) + 1
            self.key_overlap |= self.by_key[key] > 1

    def leave(self, key: Any, n: int) -> None:
        with self.lock:
            self.active -= 1
            self.by_key[key] -= 1
            self.order.append((key, n))


def _sleeping_handler(
    rp: Harness, t: Tracker, seconds: float, key_field: str = "k", wait_overlap: bool = False
) -> Any:
    """Sleeps ``seconds``; with ``wait_overlap`` entry 0 first waits (up to 5 s) for another call
    to start, so an overlap is observed whenever the consumer allows one (not a timing guess)."""
    if rp.is_async:

        async def ahandler(m: Any) -> None:
            t.enter(m[key_field])
            for _ in range(500 if wait_overlap and m["n"] == 0 else 0):
                if t.overlapped.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(seconds)
            t.leave(m[key_field], m["n"])

        return ahandler

    def handler(m: Any) -> None:
        t.enter(m[key_field])
        if wait_overlap and m["n"] == 0:
            t.overlapped.wait(5)
        time.sleep(seconds)
        t.leave(m[key_field], m["n"])

    return handler


def test_concurrency_runs_handlers_at_once_and_loses_nothing(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i, "k": i} for i in range(40)]))
    t = Tracker()
    c = _consumer(rp, s, concurrency=8, count=20)
    stats = rp.call(c.run(_sleeping_handler(rp, t, 0.03, wait_overlap=True), until_idle=0.3))
    assert sorted(n for _, n in t.order) == list(range(40))  # each once
    assert t.most > 1  # handler calls overlapped
    assert stats.acked == 40 and stats.failed == 0 and _pending(rp, s) == 0


def test_one_at_a_time_without_concurrency(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i, "k": i} for i in range(10)]))
    t = Tracker()
    rp.call(_consumer(rp, s).run(_sleeping_handler(rp, t, 0.005), until_idle=0.2))
    assert t.most == 1 and [n for _, n in t.order] == list(range(10))


def test_order_by_keeps_each_key_in_stream_order_one_at_a_time(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i, "k": f"user-{i % 3}"} for i in range(30)]))
    t = Tracker()
    c = _consumer(rp, s, concurrency=6, count=30, order_by="k")
    rp.call(c.run(_sleeping_handler(rp, t, 0.01, wait_overlap=True), until_idle=0.3))
    assert not t.key_overlap and t.most > 1  # keys in parallel, never one key twice at once
    for k in ("user-0", "user-1", "user-2"):
        ns = [n for key, n in t.order if key == k]
        assert ns == sorted(ns) and len(ns) == 10
    # a function of the message works the same
    s2 = _stream(rp, "jobs2")
    rp.call(s2.add_many([{"n": i, "k": i % 2} for i in range(12)]))
    t2 = Tracker()
    c2 = _consumer(rp, s2, concurrency=4, order_by=lambda m: m["k"])
    rp.call(c2.run(_sleeping_handler(rp, t2, 0.01), until_idle=0.3))
    assert not t2.key_overlap and [n for k, n in t2.order if k == 1] == [1, 3, 5, 7, 9, 11]


def test_stop_with_concurrency_releases_what_was_not_started(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i, "k": 0} for i in range(20)]))
    c = _consumer(rp, s, concurrency=4, order_by="k", min_idle=60)  # one key: one lane, in order
    seen: list[int] = []

    def handler(m: Any) -> None:
        seen.append(m["n"])
        if len(seen) == 5:
            c.stop()

    stats = rp.call(c.run(handler))
    assert seen == [0, 1, 2, 3, 4] and stats.acked == 5 and stats.released == 15
    rest = rp.call(_consumer(rp, s, "w2", min_idle=60, reclaim_batch=20).read(block=0))
    assert [m["n"] for m in rest] == list(range(5, 20))


def test_delayed_entries_wait_for_their_time_then_arrive(rp: Harness) -> None:
    s = _stream(rp)
    added = time.time()
    late = rp.call(s.add({"n": 1}, delay=0.6))
    later = rp.call(s.add({"n": 2}, not_before=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.9)))
    rp.call(s.add({"n": 0}))
    assert late.startswith("delayed-") and later.startswith("delayed-") and late != later
    assert rp.call(s.length()) == 1 and rp.sync_client.zcard(s.delayed_key) == 2
    got: list[tuple[int, float]] = []
    c = _consumer(rp, s)
    stats = rp.call(c.run(lambda m: got.append((m["n"], time.time() - added)), until_idle=1.2))
    assert [n for n, _ in got] == [0, 1, 2]
    assert got[1][1] >= 0.6 and got[2][1] >= 0.9  # never before their time
    assert stats.promoted == 2 and rp.sync_client.zcard(s.delayed_key) == 0 and _pending(rp, s) == 0


def test_delayed_add_is_idempotent_and_delete_removes_delayed_entries(rp: Harness) -> None:
    s = _stream(rp)
    first = rp.call(s.add({"n": 1}, delay=30, idempotency_key="remind-1"))
    again = rp.call(s.add({"n": 1}, delay=30, idempotency_key="remind-1"))
    assert first == again and rp.sync_client.zcard(s.delayed_key) == 1
    assert rp.call(s.add({"n": 2}, delay=0)) and rp.call(s.length()) == 1  # delay 0: added now
    assert rp.call(s.delete()) >= 2 and rp.sync_client.zcard(s.delayed_key) == 0


def test_a_read_moves_due_entries_with_binary_and_odd_values(rp: Harness) -> None:
    s = _stream(rp)
    odd = {"blob": b"\x00:1:\xff", "text": "a:b\n", "colon": ":", "nested": {"x": [1, 2]}}
    rp.call(s.add(odd, delay=0.05))
    time.sleep(0.1)
    c = _consumer(rp, s)
    (m,) = rp.call(c.read())
    assert m.fields == odd


def test_retry_backoff_waits_between_deliveries(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add({"n": 1}))
    tries: list[float] = []

    def handler(m: Any) -> None:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise RuntimeError("not yet")

    policy = Backoff.exponential(0.2, 0.45, jitter=0)
    c = _consumer(rp, s, retry_delay=policy, max_deliveries=5)
    stats = rp.call(c.run(handler, until_idle=1.0))
    assert len(tries) == 3 and stats.retried == 2 and stats.acked == 1
    assert tries[1] - tries[0] >= 0.2 and tries[2] - tries[1] >= 0.4  # 0.2 s, then 0.4 s


def test_nack_without_delay_follows_the_policy(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add({"n": 1}))
    c = _consumer(rp, s, min_idle=60, retry_delay=Backoff.fixed(40))
    (m,) = rp.call(c.read())
    assert rp.call(m.nack()) == 1
    idle = rp.sync_client.xpending_range(s.key, "g", "-", "+", 1)[0]["time_since_delivered"]
    assert 19_000 <= idle <= 21_000  # looks idle 60 - 40 s: reclaimable in 40 s


def test_handler_failures_are_logged_and_passed_to_on_error(
    rp: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    s = _stream(rp)
    ids = rp.call(s.add_many([{"n": 0}, {"n": 1}]))
    hooked: list[tuple[str, str, int]] = []

    def on_error(exc: BaseException, m: Any) -> None:
        hooked.append((type(exc).__name__, m.id, m.delivery_count))

    def handler(m: Any) -> None:
        if m["n"] == 1:
            raise KeyError("missing customer")

    c = _consumer(rp, s, max_deliveries=2, on_error=on_error, min_idle=0.2)
    with caplog.at_level("WARNING", logger="redispatterns.streams"):
        stats = rp.call(c.run(handler, until_idle=0.6))
    assert hooked == [("KeyError", ids[1], 1), ("KeyError", ids[1], 2)]
    assert stats.dead_lettered == 1 and stats.acked == 1
    records = [r for r in caplog.records if r.name == "redispatterns.streams"]
    failed = [r.getMessage() for r in records if "handler failed" in r.getMessage()]
    assert len(failed) == 2 and all(ids[1] in f for f in failed)
    assert "delivery 1 of 2" in failed[0] and "delivery 2 of 2" in failed[1]
    dead = [r for r in records if "dead-lettered" in r.getMessage()]
    assert len(dead) == 1 and ids[1] in dead[0].getMessage() and dead[0].levelname == "ERROR"


def test_an_async_on_error_hook_is_awaited(backend: Any) -> None:
    async def main() -> list[str]:
        s = AsyncStream("jobs", client=backend.async_client())
        await s.add({"n": 1})
        seen: list[str] = []

        async def on_error(exc: BaseException, m: Any) -> None:
            await asyncio.sleep(0)
            seen.append(f"{type(exc).__name__}:{m.id}")

        def handler(m: Any) -> None:
            raise ValueError("no")

        c = AsyncConsumer(s, "g", "w", max_deliveries=1, on_error=on_error, **FAST)
        await c.run(handler, until_idle=0.2)
        for cl in backend._async:
            await cl.aclose()
        backend._async.clear()
        return seen

    assert len(asyncio.run(main())) == 1


def test_worker_arguments_are_checked(rp: Harness) -> None:
    s = _stream(rp)
    with pytest.raises(ValueError):
        _consumer(rp, s, concurrency=0)
    with pytest.raises(TypeError):
        _consumer(rp, s, order_by=5)

    async def akey(m: Any) -> str:
        return "k"

    with pytest.raises(TypeError, match="plain function"):
        _consumer(rp, s, order_by=akey)
    with pytest.raises(ValueError, match="min_idle"):
        _consumer(rp, s, min_idle=1, retry_delay=Backoff.exponential(0.5, 5))
    with pytest.raises(TypeError, match="Backoff"):
        _consumer(rp, s, retry_delay="1s")
    with pytest.raises(TypeError):
        _consumer(rp, s, on_error="log")
    with pytest.raises(ValueError, match="not both"):
        rp.call(s.add({"n": 1}, delay=1, not_before=time.time() + 1))
    with pytest.raises(ValueError, match="aware"):
        rp.call(s.add({"n": 1}, not_before=dt.datetime.now()))
    with pytest.raises(ValueError):
        rp.call(s.add({"n": 1}, delay=-1))
    if not rp.is_async:

        async def hook(exc: BaseException, m: Any) -> None:
            return None

        with pytest.raises(TypeError, match="AsyncConsumer"):
            _consumer(rp, s, on_error=hook)
