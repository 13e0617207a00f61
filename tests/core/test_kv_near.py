"""KV reads through a near tier (pure): what a GET + PTTL reply leaves in the tier, and the
topology parser of the invalidation links."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from redispatterns import Mount
from redispatterns._core import kv_near
from redispatterns._core.kv import KVStore, MountSpec
from redispatterns._core.near import NearStore
from redispatterns._core.ops import Batch
from redispatterns._tracking import _cluster_nodes

SCHEMA = {"theme": {"type": "string", "default": "light"}}


def spec(schema: Any = None) -> MountSpec:
    return KVStore({"m": Mount(prefix="app:", schema=schema)}).spec("m")


def read(near: NearStore, s: MountSpec, key: str, reply: Any, sent_at: float = 10.0) -> Any:
    flow = kv_near.read(near, s, key, sent_at)
    op = next(flow)
    assert isinstance(op, Batch)
    assert [o.args for o in op.ops] == [("GET", s.record(key)), ("PTTL", s.record(key))]
    with pytest.raises(StopIteration) as stop:
        flow.send(reply)
    return stop.value.value


def test_a_value_is_kept_until_the_records_deadline() -> None:
    near, s = NearStore(10, 10_000, threading.Lock()), spec()
    assert kv_near.lookup(near, s, "a", 10.0) is None
    assert read(near, s, "a", [b'{"x":1}', 5000], sent_at=10.0) == (True, {"x": 1})
    first: Any = kv_near.lookup(near, s, "a", 14.9)
    assert first == (True, {"x": 1})
    first[1]["x"] = "mutated"  # each lookup decodes its own copy
    assert kv_near.lookup(near, s, "a", 14.9) == (True, {"x": 1})
    assert kv_near.lookup(near, s, "a", 15.0) is None  # sent_at + PTTL: gone


def test_no_ttl_keeps_it_until_invalidated() -> None:
    near, s = NearStore(10, 10_000), spec()
    read(near, s, "a", [b"1", -1])
    assert kv_near.lookup(near, s, "a", 1e9) == (True, 1)
    near.drop([s.record("a")])
    assert kv_near.lookup(near, s, "a", 0.0) is None


def test_absence_is_kept_and_answers_the_schema_default() -> None:
    near, s = NearStore(10, 10_000), spec(SCHEMA)
    assert read(near, s, "theme", [None, -2]) == (False, "light")
    assert kv_near.lookup(near, s, "theme", 1e9) == (False, "light")


def test_replies_that_straddle_a_write_or_an_expiry_are_not_kept() -> None:
    near, s = NearStore(10, 10_000), spec()
    assert read(near, s, "a", [b"1", -2]) == (True, 1)  # expired between GET and PTTL
    assert read(near, s, "b", [None, 3000]) == (False, None)  # written between GET and PTTL
    assert len(near) == 0


def test_an_invalidation_during_the_read_keeps_its_value_out() -> None:
    near, s = NearStore(10, 10_000), spec()
    flow = kv_near.read(near, s, "a", 0.0)
    next(flow)
    near.drop([s.record("a")])  # a write elsewhere while the reply is on its way
    with pytest.raises(StopIteration) as stop:
        flow.send([b"1", -1])
    assert stop.value.value == (True, 1)  # the caller still gets what it read
    assert len(near) == 0 and near.stats.refused == 1


def test_a_failed_read_releases_its_ticket() -> None:
    near, s = NearStore(10, 10_000), spec()
    flow = kv_near.read(near, s, "a", 0.0)
    next(flow)
    with pytest.raises(ConnectionError):
        flow.throw(ConnectionError("down"))
    assert len(near) == 0 and not near._inflight


def test_drop_prefix_forgets_one_mount_and_poisons_its_reads() -> None:
    near = NearStore(10, 10_000)
    for k in ("app:{kv}:k:a", "app:{kv}:k:b", "other:{kv}:k:a"):
        near.finish(near.begin(k), b"1", 1e9)
    pending = near.begin("app:{kv}:k:c")
    near.drop_prefix("app:{kv}:k:")
    assert not near.holds("app:{kv}:k:a") and not near.holds("app:{kv}:k:b")
    assert near.holds("other:{kv}:k:a")
    assert not near.finish(pending, b"2", 1e9)


def test_cluster_nodes_gives_every_live_node_and_which_primaries_serve() -> None:
    reply = (
        b"07c3 127.0.0.1:30004@40004 slave e7d1 0 1 4 connected\n"
        b"67ed 127.0.0.1:30002@40002,host-b master - 0 1 2 connected 5461-10922\n"
        b"292f 127.0.0.1:30003@40003 master,fail - 0 1 3 disconnected 10923-16383\n"
        b"6ec2 127.0.0.1:30005@40005 myself,master - 0 0 5 connected 0-5460 [93->-292f]\n"
        b"e7d1 127.0.0.1:30006@40006 master - 0 0 6 connected\n"
        b"8ab1 :0@0 master,noaddr - 0 0 0 disconnected\n"
    )
    assert _cluster_nodes(reply) == {
        ("127.0.0.1", 30004): (False, False),
        ("127.0.0.1", 30002): (True, False),
        ("127.0.0.1", 30003): (True, True),
        ("127.0.0.1", 30005): (True, False),
        ("127.0.0.1", 30006): (False, False),  # a primary without slots serves nothing
    }
