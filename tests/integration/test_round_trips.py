"""Round trips that the design promises, counted as socket writes on every backend, both flavours.

A Cluster pipeline writes once per node it touches; every case here stays in one slot, so one
write is one round trip on a single node and on a Cluster alike.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from loadtests.harness import count_round_trips as sends
from redispatterns import Consumer, Mount, Stream
from redispatterns.kv import KV, AsyncKV
from redispatterns.streams import AsyncConsumer, AsyncStream
from redispatterns.testing.plugin import Harness


def _real(rp: Harness) -> None:
    if rp.backend.is_fake:
        pytest.skip("fakeredis has no sockets to count")


def _one_batch(rp: Harness) -> None:
    """Batches with scripts: one write on every backend, also on redis-py 8.0's sync Cluster
    pipeline, which would ask the server for each EVAL's keys (the runner routes them itself)."""
    _real(rp)


def test_a_kv_flush_is_one_round_trip(rp: Harness) -> None:
    _one_batch(rp)
    kv: Any = rp.pick(KV, AsyncKV)(rp.client, {"user": Mount(prefix="app:user:")}, write_policy="dispose")
    rp.call(kv.set("user", "warm", 0))
    rp.call(kv.flush())
    for i in range(10):
        rp.call(kv.set("user", f"k{i}", i))
    with sends() as n:
        assert rp.call(kv.flush()) == 10
    assert n.n == 1
    assert rp.call(kv.get("user", "k9")) == 9


def test_an_immediate_kv_set_is_one_round_trip(rp: Harness) -> None:
    _real(rp)
    kv: Any = rp.pick(KV, AsyncKV)(rp.client, {"user": Mount(prefix="app:user:")}, write_policy="immediate")
    rp.call(kv.set("user", "warm", 0))  # loads the script once
    with sends() as n:
        rp.call(kv.set("user", "a", {"x": 1}))
    assert n.n == 1


def test_a_claim_sends_its_queued_acks_in_the_same_round_trip(
    rp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_batch(rp)
    stream: Any = rp.pick(Stream, AsyncStream)("rt", client=rp.client)
    for i in range(3):
        rp.call(stream.add({"i": i}))
    make: Any = rp.pick(Consumer, AsyncConsumer)
    a = make(stream, "g", "a", min_idle=0.01, count=3, block=0.01)
    rp.call(a.ensure_group())
    first = rp.call(a.read())
    assert len(first) == 3
    a._state.acks = [first[0].id]  # handled, its ack queued for the next round trip
    time.sleep(0.05)
    with sends() as n:
        rp.call(a.reclaim())
    assert n.n == 1
    assert a.stats.acked == 1


def test_a_read_sends_its_queued_acks_in_the_same_round_trip(rp: Harness) -> None:
    """XACK + XREADGROUP in one pipeline: one write, also on a Cluster, whose pipeline would ask
    the server for XREADGROUP's keys (COMMAND GETKEYS) unless the runner names the node."""
    _one_batch(rp)
    stream: Any = rp.pick(Stream, AsyncStream)("rt-read", client=rp.client)
    for i in range(6):
        rp.call(stream.add({"i": i}))
    make: Any = rp.pick(Consumer, AsyncConsumer)
    a = make(stream, "g", "a", count=3, block=0.01)
    rp.call(a.ensure_group())
    first = rp.call(a.read())
    assert len(first) == 3
    a._state.acks = [m.id for m in first]  # handled, their acks queued for the next read
    with sends() as n:
        second = rp.call(a.read())
    assert n.n == 1
    assert [m.fields["i"] for m in second] == [3, 4, 5]
    assert a.stats.acked == 3
