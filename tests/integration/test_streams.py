"""Streams and consumer groups on every backend (fakeredis, standalone, Cluster) and flavour."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
import redis

from redispatterns import Mount
from redispatterns._core.keys import slot
from redispatterns.errors import DecodeError
from redispatterns.streams import AsyncConsumer, AsyncStream, Consumer, Stream
from redispatterns.testing.plugin import Harness

FAST: dict[str, Any] = {"block": 0.05, "min_idle": 0.2, "reclaim_interval": 0.05}


def _stream(rp: Harness, name: str = "jobs", **kw: Any) -> Any:
    return rp.pick(Stream, AsyncStream)(name, client=rp.client, **kw)


def _consumer(rp: Harness, stream: Any, name: str, group: str = "g", **kw: Any) -> Any:
    opts = {**FAST, **kw}
    return rp.pick(Consumer, AsyncConsumer)(stream, group, name, **opts)


def _pending(rp: Harness, stream: Any, group: str = "g") -> int:
    return int(rp.sync_client.xpending(stream.key, group)["pending"])


def test_add_read_ack_roundtrip(rp: Harness) -> None:
    s = _stream(rp)
    ids = [rp.call(s.add({"n": i, "tags": ["a", "b"], "blob": b"\x00\x01"})) for i in range(5)]
    assert len(set(ids)) == 5 and rp.call(s.length()) == 5
    c = _consumer(rp, s, "w1")
    msgs = rp.call(c.read())
    assert [m.id for m in msgs] == ids
    assert [m["n"] for m in msgs] == list(range(5))
    assert msgs[0].fields == {"n": 0, "tags": ["a", "b"], "blob": b"\x00\x01"}
    assert all(m.delivery_count == 1 for m in msgs)
    assert _pending(rp, s) == 5
    assert rp.call(msgs[0].ack()) == 1
    assert rp.call(c.ack(*msgs[1:])) == 4
    assert _pending(rp, s) == 0
    assert rp.call(c.read(block=0)) == []


def test_group_creation_is_idempotent_and_start_position(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add({"old": 1}))
    c = _consumer(rp, s, "w1", group="from-start")
    assert rp.call(c.ensure_group()) is True
    assert rp.call(_consumer(rp, s, "w2", group="from-start").ensure_group()) is False
    late = _consumer(rp, s, "w3", group="new-only", start="$")
    rp.call(late.ensure_group())
    rp.call(s.add({"new": 2}))
    assert [m.fields for m in rp.call(c.read())] == [{"old": 1}, {"new": 2}]
    assert [m.fields for m in rp.call(late.read())] == [{"new": 2}]


def test_idempotent_add_returns_first_id(rp: Harness) -> None:
    s = _stream(rp, maxlen=1000)
    first = rp.call(s.add({"v": 1}, idempotency_key="order-17"))
    again = rp.call(s.add({"v": 2}, idempotency_key="order-17"))
    other = rp.call(s.add({"v": 3}, idempotency_key="order-18"))
    assert again == first != other
    assert rp.call(s.length()) == 2
    marker = s.spec.marker("order-17")
    assert slot(marker) == slot(s.key) == slot(s.dead_letter_key)
    ttl = rp.sync_client.pttl(marker)
    assert 0 < ttl <= 86_400_000


def test_concurrent_duplicate_adds_give_one_entry(rp: Harness) -> None:
    s = _stream(rp)
    if rp.is_async:

        async def many() -> list[str]:
            # redis-py 8.1's asyncio cluster client fails concurrent first calls before it has
            # initialised (even plain GETs): warm it with one call first
            await s.length()
            return list(await asyncio.gather(*(s.add({"i": i}, idempotency_key="dup") for i in range(50))))

        ids = rp.call(many())
    else:
        ids = []
        barrier = threading.Barrier(16)
        lock = threading.Lock()

        def worker(i: int) -> None:
            barrier.wait()
            for j in range(5):
                r = s.add({"i": i, "j": j}, idempotency_key="dup")
                with lock:
                    ids.append(r)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(ids)) == 1
    assert rp.call(s.length()) == 1


def test_add_whose_reply_is_lost_then_retried_gives_one_entry(rp: Harness, monkeypatch: Any) -> None:
    if rp.backend.is_fake:
        pytest.skip("needs a real connection to lose a reply on")
    s = _stream(rp)
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    cls: Any = aconn.AbstractConnection if rp.is_async else sconn.AbstractConnection
    orig = cls.read_response
    lost = {"n": 0}

    if rp.is_async:

        async def aread(self: Any, *a: Any, **kw: Any) -> Any:
            reply = await orig(self, *a, **kw)
            if lost["n"] == 0 and isinstance(reply, list) and len(reply) == 2 and reply[1] == 1:
                lost["n"] += 1  # the script ran and answered {id, 1}: drop that answer
                raise redis.ConnectionError("reply lost (injected)")
            return reply

        monkeypatch.setattr(cls, "read_response", aread)
    else:

        def sread(self: Any, *a: Any, **kw: Any) -> Any:
            reply = orig(self, *a, **kw)
            if lost["n"] == 0 and isinstance(reply, list) and len(reply) == 2 and reply[1] == 1:
                lost["n"] += 1
                raise redis.ConnectionError("reply lost (injected)")
            return reply

        monkeypatch.setattr(cls, "read_response", sread)
    first: str | None = None
    for _ in range(3):  # the caller retries, as a producer with a retry policy does
        try:
            first = rp.call(s.add({"v": 1}, idempotency_key="pay-1"))
            break
        except redis.ConnectionError:
            continue
    monkeypatch.setattr(cls, "read_response", orig)
    assert lost["n"] == 1, "the injection never fired"
    assert first is not None
    assert rp.call(s.length()) == 1
    assert [e[0].decode() for e in rp.sync_client.xrange(s.key)] == [first]


def test_poison_message_tried_exactly_max_deliveries_then_dead_lettered(rp: Harness) -> None:
    s = _stream(rp)
    ids = [rp.call(s.add({"n": i})) for i in range(10)]
    attempts: dict[str, int] = {}
    done: list[str] = []

    def handler(m: Any) -> None:
        attempts[m.id] = attempts.get(m.id, 0) + 1
        if m["n"] == 4:
            raise ValueError("poison pill")
        done.append(m.id)

    c = _consumer(rp, s, "w1", max_deliveries=3)
    stats = rp.call(c.run(handler, until_idle=0.4))
    assert attempts[ids[4]] == 3
    assert sorted(done) == sorted(i for i in ids if i != ids[4])
    assert all(attempts[i] == 1 for i in ids if i != ids[4])
    assert stats.dead_lettered == 1 and stats.failed == 3 and stats.retried == 2
    dead = rp.call(s.dead_letters())
    assert len(dead) == 1
    d = dead[0]
    assert (d.id, d.group, d.deliveries, d.fields) == (ids[4], "g", 3, {"n": 4})
    assert "ValueError: poison pill" in d.error and not d.missing and d.dead_at > 0
    assert _pending(rp, s) == 0
    m = rp.call(s.metrics("g"))
    assert (m.pending, m.dead_letters, m.lag) == (0, 1, 0)


def test_entry_of_a_consumer_that_died_handling_it_is_dead_lettered_without_another_try(rp: Harness) -> None:
    s = _stream(rp)
    mid = rp.call(s.add({"crash": True}))
    for name in ("a", "b"):  # two consumers take it and die without acking (deliveries 1, 2)
        c = _consumer(rp, s, name, max_deliveries=2)
        got = rp.call(c.read()) if name == "a" else rp.call(c.reclaim())
        assert [x.id for x in got] == [mid]
        time.sleep(0.25)
    survivor = _consumer(rp, s, "c", max_deliveries=2)
    ran: list[str] = []
    stats = rp.call(survivor.run(lambda m: ran.append(m.id), until_idle=0.2))
    assert ran == [] and stats.dead_lettered == 1
    (d,) = rp.call(s.dead_letters())
    assert d.id == mid and d.deliveries == 2 and "no ack" in d.error
    assert _pending(rp, s) == 0


def test_restart_with_same_name_reprocesses_own_pending_at_once(rp: Harness) -> None:
    s = _stream(rp)
    ids = [rp.call(s.add({"n": i})) for i in range(15)]
    first = _consumer(rp, s, "worker-1", count=10, min_idle=3600)
    assert len(rp.call(first.read())) == 10  # then "crashes": no ack
    restarted = _consumer(rp, s, "worker-1", count=10, min_idle=3600)
    again: list[Any] = []
    for _ in range(10):  # handed back one at a time (reclaim_batch=1): a crash charges one entry
        batch = rp.call(restarted.read(block=0))
        assert len(batch) == 1
        again += batch
        rp.call(batch[0].ack())
    assert [m.id for m in again] == ids[:10]
    assert all(m.delivery_count == 2 for m in again)
    rest = rp.call(restarted.read(block=0))
    assert [m.id for m in rest] == ids[10:]
    assert restarted.stats.recovered == 10


def test_reclaim_happens_on_a_stream_with_no_new_traffic(rp: Harness) -> None:
    s = _stream(rp)
    ids = [rp.call(s.add({"n": i})) for i in range(5)]
    dead = _consumer(rp, s, "dead")
    assert len(rp.call(dead.read())) == 5  # and never acks
    seen: list[str] = []
    live = _consumer(rp, s, "live", min_idle=0.3, reclaim_interval=0.1)
    t0 = time.monotonic()
    stats = rp.call(live.run(lambda m: seen.append(m.id), max_messages=5))
    assert sorted(seen) == sorted(ids)
    assert stats.reclaimed == 5 and time.monotonic() - t0 < 5
    assert _pending(rp, s) == 0


def test_nack_hands_the_entry_back_without_counting_a_delivery(rp: Harness) -> None:
    s = _stream(rp)
    mid = rp.call(s.add({"x": 1}))
    a = _consumer(rp, s, "a", min_idle=60)
    (m,) = rp.call(a.read())
    assert rp.call(m.nack()) == 1
    info = rp.sync_client.xpending_range(s.key, "g", "-", "+", 10)
    assert info[0]["times_delivered"] == 1 and info[0]["time_since_delivered"] >= 59_000
    b = _consumer(rp, s, "b", min_idle=60)
    (again,) = rp.call(b.reclaim())
    assert again.id == mid and again.delivery_count == 2
    later = rp.call(a.nack(again, delay=30))  # no longer a's: left alone
    assert later == 0


def test_graceful_stop_finishes_the_message_in_hand_and_releases_the_rest(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i} for i in range(10)]))
    c = _consumer(rp, s, "w1", min_idle=60)
    seen: list[int] = []

    def handler(m: Any) -> None:
        seen.append(m["n"])
        if len(seen) == 3:
            c.stop()

    stats = rp.call(c.run(handler))
    assert seen == [0, 1, 2]
    assert stats.acked == 3 and stats.released == 7
    other = _consumer(rp, s, "w2", min_idle=60, reclaim_batch=10)
    rest = rp.call(other.read(block=0))
    assert [m["n"] for m in rest] == list(range(3, 10))
    assert all(m.delivery_count == 2 for m in rest)


def test_entries_trimmed_while_pending_are_counted_and_dropped(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i} for i in range(6)]))
    a = _consumer(rp, s, "a")
    assert len(rp.call(a.read(count=4))) == 4
    rp.sync_client.xtrim(s.key, maxlen=0)  # a producer's MAXLEN cap overtook the consumers
    time.sleep(0.25)
    b = _consumer(rp, s, "b")
    assert rp.call(b.reclaim()) == []
    assert b.stats.gone == 4
    assert _pending(rp, s) == 0


def test_metrics(rp: Harness) -> None:
    s = _stream(rp)
    m0 = rp.call(s.metrics("g"))
    assert (m0.length, m0.group_exists, m0.pending) == (0, False, 0)
    rp.call(s.add_many([{"n": i} for i in range(7)]))
    c = _consumer(rp, s, "w1")
    msgs = rp.call(c.read(count=3))
    time.sleep(0.05)
    m = rp.call(c.metrics())
    assert (m.length, m.group_exists, m.pending, m.lag, m.dead_letters, m.consumers) == (7, True, 3, 4, 0, 1)
    assert m.oldest_pending_id == msgs[0].id and m.last_delivered_id == msgs[-1].id
    assert m.oldest_pending_age >= 0.04 and m.oldest_pending_idle >= 0.04


def test_maxlen_trims(rp: Harness) -> None:
    s = _stream(rp, maxlen=5, approximate=False)
    for i in range(12):
        rp.call(s.add({"n": i}, idempotency_key=f"k{i}" if i % 2 else None))
    assert rp.call(s.length()) == 5
    aged = _stream(rp, "aged", max_age=3600)
    rp.call(aged.add({"n": 1}))
    assert rp.call(aged.length()) == 1


def test_add_many_keeps_order_fields_and_trim_across_script_calls(rp: Harness, monkeypatch: Any) -> None:
    from redispatterns._core import streams as core

    monkeypatch.setattr(core, "ADD_MANY_CHUNK", 3)  # 8 entries: three script calls, one round trip
    s = _stream(rp)
    entries = [{"n": i, **({"extra": "x" * i} if i % 2 else {})} for i in range(8)]
    ids = rp.call(s.add_many(entries))
    rows = rp.sync_client.xrange(s.key)
    assert [r[0].decode() for r in rows] == ids and len(set(ids)) == 8
    assert [{k.decode(): s.codec.decode(v) for k, v in r[1].items()} for r in rows] == entries
    capped = _stream(rp, "capped", maxlen=5, approximate=False)
    rp.call(capped.add_many([{"n": i} for i in range(8)]))
    assert [s.codec.decode(r[1][b"n"]) for r in rp.sync_client.xrange(capped.key)] == [3, 4, 5, 6, 7]


def test_validation_and_mount_modes(rp: Harness) -> None:
    s = _stream(rp)
    with pytest.raises(ValueError):
        rp.call(s.add({}))
    with pytest.raises(TypeError):
        rp.call(s.add({1: "x"}))
    with pytest.raises(ValueError, match="reserved"):
        rp.call(s.add({"rp:id": 1}))
    with pytest.raises(TypeError):
        rp.call(s.add({"x": object()}))
    with pytest.raises(ValueError):
        _stream(rp, "")
    with pytest.raises(ValueError):
        _stream(rp, "x", maxlen=10, minid="1-0")
    with pytest.raises(ValueError):
        _consumer(rp, s, "w", count=0)
    with pytest.raises(TypeError):
        _consumer(rp, s, "w", max_deliveries=1.5)
    with pytest.raises(ValueError, match="min_idle"):
        _consumer(rp, s, "w", min_idle=1, retry_delay=2)
    with pytest.raises(ValueError, match="min_idle"):
        rp.call(_consumer(rp, s, "w", min_idle=1).nack("1-0", delay=5))
    with pytest.raises(ValueError):
        rp.pick(Consumer, AsyncConsumer)(s, "g", "w", client=rp.client)
    with pytest.raises(TypeError):
        rp.pick(Consumer, AsyncConsumer)(rp.pick(AsyncStream, Stream)("x", client=None), "g", "w")
    ro: Any = rp.pick(Stream, AsyncStream)("jobs", mount=Mount(mode="read", prefix="ro:"), client=rp.client)
    with pytest.raises(PermissionError):
        rp.call(ro.add({"x": 1}))
    with pytest.raises(PermissionError):
        rp.pick(Consumer, AsyncConsumer)(ro, "g", "w")
    assert rp.call(s.add({"x": 1})) and rp.call(s.delete()) == 1


def test_consumer_by_name_under_a_mount(rp: Harness) -> None:
    mount = Mount(prefix="app:")
    s: Any = rp.pick(Stream, AsyncStream)("q", mount=mount, client=rp.client)
    assert s.key == "app:stream:{q}" and s.dead_letter_key == "app:stream:{q}:dlq"
    rp.call(s.add({"x": 1}))
    c: Any = rp.pick(Consumer, AsyncConsumer)("q", "g", "w", mount=mount, client=rp.client, block=0)
    assert [m.fields for m in rp.call(c.read())] == [{"x": 1}]


def test_async_handler(backend: Any) -> None:
    async def main() -> list[int]:
        s = AsyncStream("jobs", client=backend.async_client())
        await s.add_many([{"n": i} for i in range(4)])
        c = AsyncConsumer(s, "g", "w", **FAST)
        got: list[int] = []

        async def handler(m: Any) -> None:
            await asyncio.sleep(0)
            got.append(m["n"])

        await c.run(handler, until_idle=0.1)
        for cl in backend._async:
            with contextlib.suppress(Exception):
                await cl.aclose()
        backend._async.clear()
        return got

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_sync_consumer_refuses_async_handler(client: Any) -> None:
    c = Consumer(Stream("jobs", client=client), "g", "w")

    async def handler(m: Any) -> None:
        return None

    with pytest.raises(TypeError, match="AsyncConsumer"):
        c.run(handler)


def _real_subset(backend: Any) -> None:
    if backend.is_fake or (backend.kind is not None and backend.kind.name != "redis-7.0"):
        pytest.skip("timing-heavy: one server kind, standalone and cluster")


@pytest.mark.slow
def test_blocking_read_longer_than_the_socket_timeout_returns_empty(backend: Any, flavour: str) -> None:
    _real_subset(backend)
    rp = Harness(backend, flavour)
    try:
        short = backend.sync_client(socket_timeout=0.5)
        if rp.is_async:
            short = rp.call_in_loop(lambda: backend.async_client(socket_timeout=0.5))
        s = rp.pick(Stream, AsyncStream)("idle", client=short)
        c: Any = rp.pick(Consumer, AsyncConsumer)(s, "g", "w", block=1.2)
        t0 = time.monotonic()
        assert rp.call(c.read()) == []
        assert time.monotonic() - t0 >= 1.1
        assert c.config.block_cap < 0.5
        assert int(rp.sync_client.xpending(s.key, "g")["pending"]) == 0
        if not rp.is_async:  # the hazard this avoids: one raw BLOCK beyond the timeout fails
            with pytest.raises(redis.TimeoutError):
                short.execute_command("XREADGROUP", "GROUP", "g", "w", "BLOCK", 1200, "STREAMS", s.key, ">")
    finally:
        rp.close()


def test_a_deleted_stream_is_a_stream_error_then_the_group_comes_back(rp: Harness) -> None:
    from redispatterns import StreamError

    s = _stream(rp)
    c = _consumer(rp, s, "w", block=0)
    rp.call(s.add({"n": 1}))
    assert len(rp.call(c.read())) == 1
    rp.call(s.delete())
    with pytest.raises(StreamError, match="does not exist"):
        rp.call(c.read())
    assert rp.call(c.read()) == []  # the group was created again
    rp.call(s.add({"n": 2}))
    assert [m["n"] for m in rp.call(c.read())] == [2]


def test_prune_deletes_only_idle_consumers_with_nothing_pending(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i} for i in range(3)]))
    holder = _consumer(rp, s, "holder", min_idle=60)
    assert len(rp.call(holder.read(count=1))) == 1  # keeps one pending: never pruned
    idle = _consumer(rp, s, "gone-process", min_idle=60)
    rp.call(idle.ack(*rp.call(idle.read(count=1))))  # nothing pending
    me = _consumer(rp, s, "me", min_idle=60)
    rp.call(me.ensure_group())
    time.sleep(0.15)
    assert rp.call(me.prune_consumers(idle=3600)) == []
    assert rp.call(me.prune_consumers(idle=0.1)) == ["gone-process"]
    names = sorted(c["name"].decode() for c in rp.sync_client.xinfo_consumers(s.key, "g"))
    assert names == ["holder"]
    assert _pending(rp, s) == 1


def test_trim_acked_keeps_pending_and_unread_entries(rp: Harness) -> None:
    s = _stream(rp)
    assert rp.call(s.trim_acked()) == 0  # no stream
    ids = rp.call(s.add_many([{"n": i} for i in range(10)]))
    assert rp.call(s.trim_acked()) == 0  # no group: nothing is known to be acked
    fast = _consumer(rp, s, "f", group="fast")
    slow = _consumer(rp, s, "s", group="slow")
    rp.call(fast.ack(*rp.call(fast.read(count=8))))
    got = rp.call(slow.read(count=5))
    rp.call(slow.ack(*got[:2], got[3]))  # slow: 0,1,3 acked, 2 and 4 pending, 5.. unread
    assert rp.call(s.trim_acked(approximate=False)) == 2
    assert [e[0].decode() for e in rp.sync_client.xrange(s.key)] == ids[2:]
    rp.call(slow.ack(got[2], got[4]))
    rp.call(slow.ack(*rp.call(slow.read(count=1))))  # slow read up to 5, all acked
    assert rp.call(s.trim_acked(approximate=False)) == 4  # both groups acked everything up to id 5
    assert [e[0].decode() for e in rp.sync_client.xrange(s.key)] == ids[6:]


def test_stop_before_run_is_honoured_and_consumed(rp: Harness) -> None:
    s = _stream(rp)
    rp.call(s.add_many([{"n": i} for i in range(3)]))
    c = _consumer(rp, s, "w")
    c.stop()
    seen: list[int] = []
    rp.call(c.run(lambda m: seen.append(m["n"])))  # returns at once
    assert seen == []
    rp.call(c.run(lambda m: seen.append(m["n"]), until_idle=0.1))  # a later run works
    assert seen == [0, 1, 2]


def test_sync_run_in_a_thread_stops_from_another_thread(backend: Any) -> None:
    s = Stream("jobs", client=backend.sync_client())
    c = Consumer(s, "g", "w", block=0.2)
    seen: list[int] = []
    t = threading.Thread(target=c.run, args=(lambda m: seen.append(m["n"]),))
    t.start()
    s.add({"n": 1})
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    c.stop()
    t.join(timeout=5)
    assert not t.is_alive() and seen == [1]
    assert int(backend.sync_client().xpending(s.key, "g")["pending"]) == 0


def test_a_client_that_decodes_responses_works_the_same(backend: Any) -> None:
    c = backend.sync_client(decode_responses=True)
    s = Stream("jobs", client=c)
    first = s.add({"n": 1, "tags": ["a"]}, idempotency_key="k")  # JSON only: a decoding client
    # cannot read bytes values back (their 0xff marker is not UTF-8)
    assert s.add({"n": 1}, idempotency_key="k") == first
    con = Consumer(s, "g", "w", **FAST)
    seen: list[Any] = []

    def handler(m: Any) -> None:
        seen.append(m.fields)
        raise ValueError("always")

    con2 = Consumer(s, "g", "w", **{**FAST, "max_deliveries": 2})
    con2.run(handler, until_idle=0.3)
    assert seen == [{"n": 1, "tags": ["a"]}] * 2
    (d,) = s.dead_letters()
    assert d.id == first and d.deliveries == 2 and d.fields == {"n": 1, "tags": ["a"]}
    assert con.metrics().pending == 0 and con.metrics().dead_letters == 1


def test_run_never_refills_a_message_something_still_holds(rp: Harness) -> None:
    """``run`` refills the last batch's message objects for the next batch, but only those nothing
    else holds: messages a handler kept, or that a failure's ``on_error`` kept, stay as handled."""
    s = _stream(rp)
    ids = [rp.call(s.add({"n": i})) for i in range(40)]
    seen: list[tuple[str, int]] = []
    kept: list[Any] = []
    failed: list[Any] = []

    def handler(m: Any) -> None:
        seen.append((m.id, m["n"]))  # decoded anew for each entry (no stale fields)
        if m["n"] % 3 == 0:
            kept.append(m)
        if m["n"] % 7 == 0:
            raise ValueError("dead-lettered on its first failure")

    c = _consumer(rp, s, "w", count=4, max_deliveries=1, on_error=lambda exc, m: failed.append(m))
    rp.call(c.run(handler, max_messages=40))
    assert seen == [(mid, n) for n, mid in enumerate(ids)]
    assert [(m.id, m["n"], m.delivery_count) for m in kept] == [(ids[n], n, 1) for n in range(0, 40, 3)]
    assert [(m.id, m.fields) for m in failed] == [(ids[n], {"n": n}) for n in range(0, 40, 7)]
    assert len({id(m) for m in kept + failed}) == len(kept) + len(failed) - 2  # 0 and 21 in both
    assert c.stats.dead_lettered == 6 and _pending(rp, s) == 0


def test_an_entry_the_codec_refuses_fails_its_handler_and_the_next_batches_decode(rp: Harness) -> None:
    """In ``run``, an entry whose value is not the codec's (here not JSON) makes a message whose
    ``fields`` raises ``DecodeError``: the handler fails on it (dead-lettered after one try) and
    every other entry, in the same and the later batches (their messages refilled), is decoded."""
    s = _stream(rp)
    raw = rp.sync_client
    ids = []
    for n in range(12):
        if n in (2, 4):
            ids.append(raw.xadd(s.key, {"n": b"not json"}).decode())
        else:
            ids.append(rp.call(s.add({"n": n})))
    got: list[tuple[str, Any]] = []
    errors: list[str] = []

    def handler(m: Any) -> None:
        try:
            got.append((m.id, m.fields["n"]))
        except DecodeError as exc:
            errors.append(m.id)
            raise exc

    c = _consumer(rp, s, "w", count=3, max_deliveries=1)
    rp.call(c.run(handler, max_messages=12))
    assert errors == [ids[2], ids[4]]
    assert got == [(ids[n], n) for n in range(12) if n not in (2, 4)]
    assert c.stats.dead_lettered == 2 and _pending(rp, s) == 0
