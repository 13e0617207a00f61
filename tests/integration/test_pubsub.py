"""Pub/sub on every backend and flavour: delivery, gaps after CLIENT KILL, half-open detection,
overflow, sharded channels (cluster included), and no leaked threads or connections."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import redispatterns as rp
import redispatterns.pubsub
from redispatterns import Mount, Namespace, ServerUnavailable
from redispatterns._core.keys import Keyspace
from redispatterns._core.pubsub import LinkState, Names
from redispatterns.pubsub import (
    AsyncPublisher,
    AsyncSubscriber,
    Gap,
    Publisher,
    PubSubMessage,
    Subscriber,
    SubscriberOverflow,
    publish,
    publish_async,
)
from redispatterns.testing.plugin import Backend, Harness


def _sub(rp_: Harness, channels: Any = (), **kw: Any) -> Any:
    cls: Any = rp_.pick(Subscriber, AsyncSubscriber)
    kw.setdefault("client", rp_.client)
    sub = cls(channels, **kw)
    rp_.call(sub.start())
    return sub


def _pub(rp_: Harness, **kw: Any) -> Any:
    kw.setdefault("client", rp_.client)
    return rp_.pick(Publisher, AsyncPublisher)(**kw)


def _wait(rp_: Harness, pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        if rp_.is_async:
            rp_.call(asyncio.sleep(0.01))
        else:
            time.sleep(0.01)


def _nodes(backend: Backend, c: Any) -> list[Any]:
    return list(c.get_primaries()) if backend.is_cluster else [None]


def _on(c: Any, node: Any, *args: Any) -> Any:
    return c.execute_command(*args) if node is None else c.execute_command(*args, target_nodes=node)


_admin: list[tuple[Backend, Any]] = []


def admin(backend: Backend) -> Any:
    """One extra client per test's backend for CLIENT commands (so counting adds no connections).

    Keyed by the object itself, not ``id()``: a later test's backend may reuse a freed id."""
    if not _admin or _admin[0][0] is not backend:
        _admin[:] = [(backend, backend.sync_client())]
    return _admin[0][1]


def kill_pubsub(backend: Backend) -> None:
    c = admin(backend)
    for node in _nodes(backend, c):
        _on(c, node, "CLIENT", "KILL", "TYPE", "pubsub")


def _pubsub_threads() -> int:
    """Live pub/sub threads (readers and handlers). Other tests' daemon threads (a near tier's
    invalidation links, stopping once their stores are collected) may end while a test runs, so
    the process's whole thread count is no measure of a leak here."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("rp-pubsub-"))


def client_count(backend: Backend, *type_: str) -> int:
    c = admin(backend)
    total = 0
    for node in _nodes(backend, c):
        text = _on(c, node, "CLIENT", "LIST", *type_)
        total += len([line for line in rp_str(text).splitlines() if line.strip()])
    return total


def rp_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def real_only(backend: Backend) -> None:
    if backend.is_fake:
        pytest.skip("needs a real server (CLIENT KILL / CLIENT LIST / CLIENT PAUSE)")


# --------------------------------------------------------------------------- delivery


def test_publish_and_receive_channels_and_patterns(rp: Harness) -> None:
    sub = _sub(rp, ["orders", "audit"], patterns=["user.*"])
    try:
        pub = _pub(rp)
        assert rp.call(pub.publish("orders", {"id": 1})) >= 1
        rp.call(pub.publish("user.42", [1, 2]))
        rp.call(pub.publish("audit", b"\x00raw"))
        rp.call(pub.publish("elsewhere", "nobody listens"))
        got = [rp.call(sub.get(timeout=10)) for _ in range(3)]
        # one channel keeps its order; across channels a Cluster's bus may reorder
        assert sorted((m.channel, repr(m.data), m.pattern) for m in got) == [
            ("audit", repr(b"\x00raw"), None),
            ("orders", repr({"id": 1}), None),
            ("user.42", repr([1, 2]), "user.*"),
        ]
        assert [m.seq for m in got] == [1, 1, 1]
        assert rp.call(sub.get(timeout=0.2)) is None
        assert sub.stats.delivered == 3 and sub.stats.gaps == 0
    finally:
        rp.call(sub.close())
    assert sub.closed
    assert rp.call(sub.get(timeout=0.1)) is None


def test_module_level_publish_and_sequence_numbers(rp: Harness) -> None:
    sub = _sub(rp, ["n"])
    try:
        for i in range(5):
            if rp.is_async:
                rp.call(rp_publish_async("n", i, client=rp.client))
            else:
                rp_publish("n", i, client=rp.client)
        got = [rp.call(sub.get(timeout=10)) for _ in range(5)]
        assert [(m.data, m.seq) for m in got] == [(i, i + 1) for i in range(5)]
        assert not sub.gaps
    finally:
        rp.call(sub.close())


rp_publish = publish
rp_publish_async = publish_async


def test_names_are_exported_from_the_package() -> None:
    for name in (
        "Publisher",
        "AsyncPublisher",
        "Subscriber",
        "AsyncSubscriber",
        "PubSubMessage",
        "Gap",
        "publish",
    ):
        assert getattr(rp, name) is getattr(redispatterns.pubsub, name)


def test_sharded_channels(rp: Harness, backend: Backend) -> None:
    names = [f"shard-{i}" for i in range(12)]  # spread over slots (and nodes on a cluster)
    sub = _sub(rp, names, sharded=True)
    try:
        pub = _pub(rp, sharded=True)
        for n in names:
            rp.call(pub.publish(n, n))
        # a classic PUBLISH on the same name does not reach a shard subscriber
        rp.call(_pub(rp).publish(names[0], "classic"))
        got = sorted((m.channel, m.data, m.sharded) for m in (rp.call(sub.get(timeout=10)) for _ in names))
        assert got == sorted((n, n, True) for n in names)
        assert rp.call(sub.get(timeout=0.2)) is None
    finally:
        rp.call(sub.close())


@pytest.mark.parametrize("sharded", [False, True])
def test_numbering_keeps_its_counter_key_and_ttl(rp: Harness, backend: Backend, sharded: bool) -> None:
    """The script takes the channel from the counter key (``<channel>:seq``): messages reach the
    right channel, for any name (non-ASCII, a ``#`` digest subject), numbered on the counter that
    earlier versions used, with the mount's TTL refreshed on every publish."""
    mount = Mount(prefix="ttl:", ttl=30)
    names = ["zamówienia", "#7", "a:seq"]
    sub = _sub(rp, names, sharded=sharded, mount=mount)
    try:
        pub = _pub(rp, sharded=sharded, mount=mount)
        for i in range(3):
            for n in names:
                assert rp.call(pub.publish(n, [n, i])) >= (0 if backend.is_cluster and not sharded else 1)
        got = [rp.call(sub.get(timeout=10)) for _ in range(9)]
        by_channel = {n: [(m.data, m.seq, m.sharded) for m in got if m.channel == n] for n in names}
        assert by_channel == {n: [([n, i], i + 1, sharded) for i in range(3)] for n in names}
        assert not sub.gaps
        c = backend.sync_client()
        for n in names:
            counter = Names(mount.keyspace).counter(n)
            assert counter == Names(mount.keyspace).channel(n) + ":seq"
            assert int(c.get(counter)) == 3
            assert 0 < int(c.pttl(counter)) <= 30_000
    finally:
        rp.call(sub.close())


def test_unsequenced_and_foreign_messages(rp: Harness, backend: Backend) -> None:
    sub = _sub(rp, ["plain"])
    try:
        rp.call(_pub(rp, sequence=False).publish("plain", {"a": 1}))
        full = Mount().keyspace.tagged("pubsub", "plain")
        backend.sync_client().publish(full, b"not json")  # another client, no envelope
        a, b = rp.call(sub.get(timeout=10)), rp.call(sub.get(timeout=10))
        assert (a.data, a.seq) == ({"a": 1}, None)
        assert (b.data, b.seq) == (b"not json", None)
    finally:
        rp.call(sub.close())


def test_mount_prefix_isolates_channels(rp: Harness) -> None:
    a = Mount(prefix="app-a:")
    b = Mount(prefix="app-b:")
    ns_client = rp.client
    cls: Any = rp.pick(Subscriber, AsyncSubscriber)
    sub = cls(["x"], mount=rp_namespace(a, ns_client, rp.is_async))
    rp.call(sub.start())
    try:
        rp.call(_pub(rp, client=None, mount=rp_namespace(b, ns_client, rp.is_async)).publish("x", "b"))
        rp.call(_pub(rp, client=None, mount=rp_namespace(a, ns_client, rp.is_async)).publish("x", "a"))
        m = rp.call(sub.get(timeout=10))
        assert (m.channel, m.data) == ("x", "a")
        assert rp.call(sub.get(timeout=0.2)) is None
    finally:
        rp.call(sub.close())


def rp_namespace(mount: Mount, client: Any, is_async: bool) -> Namespace:
    return Namespace(mount, client, asyncio=is_async)


# --------------------------------------------------------------------------- faults


def test_client_kill_resubscribes_and_reports_the_gap(rp: Harness, backend: Backend) -> None:
    real_only(backend)
    gaps: list[Gap] = []
    # names of their own per flavour: a Cluster's bus may still carry the other run's last messages
    k = "ka" if rp.is_async else "ks"
    names = [f"{k}1", f"{k}2"] if not backend.is_cluster else [f"{k}{i}" for i in range(6)]
    # the first retry waits at least half the first delay, so "m2" is surely published (and, on a
    # Cluster, carried over the bus to every node) while nobody listens
    sub = _sub(rp, names, on_gap=gaps.append, backoff=(1.2, 2.0) if backend.is_cluster else (0.4, 1.0))
    pub = _pub(rp)
    try:
        for n in names:
            rp.call(pub.publish(n, "m1"))
        assert sorted(rp.call(sub.get(timeout=10)).data for _ in names) == ["m1"] * len(names)

        kill_pubsub(backend)
        for n in names:  # published while the subscriber is away: lost, but counted
            rp.call(pub.publish(n, "m2"))
        _wait(rp, lambda: sub.stats.reconnects >= 1 and rp_live(sub))
        for n in names:
            rp.call(pub.publish(n, "m3"))
        got = [rp.call(sub.get(timeout=10)) for _ in names]
        assert sorted(m.data for m in got) == ["m3"] * len(names)
        assert {m.seq for m in got} == {3}

        disconnects = [g for g in gaps if g.reason == "disconnect"]
        assert len(disconnects) == 1
        assert set(disconnects[0].channels) == set(names)
        assert disconnects[0].since <= disconnects[0].until
        seq_gaps = sorted(
            (g.channels, g.first_missing, g.last_missing, g.missed) for g in gaps if g.reason == "sequence"
        )
        assert seq_gaps == sorted(((n,), 2, 2, 1) for n in names)
    finally:
        rp.call(sub.close())


def rp_live(sub: Any) -> bool:
    return all(link.state.live for link in sub._links)


def test_sharded_resubscribe_after_kill_many_slots(rp: Harness, backend: Backend) -> None:
    """20 shard channels over many slots (several per node): all come back after CLIENT KILL."""
    real_only(backend)
    names = [f"s{i}" for i in range(20)]
    gaps: list[Gap] = []
    sub = _sub(rp, names, sharded=True, on_gap=gaps.append, backoff=(0.05, 0.5))
    pub = _pub(rp, sharded=True)
    try:
        kill_pubsub(backend)
        _wait(rp, lambda: sum(g.reason == "disconnect" for g in gaps) >= len(sub._links) or rp_drain(rp, sub))
        _wait(rp, lambda: rp_live(sub) and sub.stats.reconnects >= len(sub._links))
        for n in names:
            rp.call(pub.publish(n, n))
        got = sorted(rp.call(sub.get(timeout=10)).channel for _ in names)
        assert got == sorted(names)
        assert sum(g.reason == "disconnect" for g in sub.gaps) == len(sub._links)
    finally:
        rp.call(sub.close())


def rp_drain(rp_: Harness, sub: Any) -> bool:
    """Let the consumer side run once (gaps are dispatched when the queue is read)."""
    rp_.call(sub.get(timeout=0.01))
    return False


def test_half_open_connection_is_detected_by_ping_deadline(rp: Harness, backend: Backend) -> None:
    real_only(backend)
    if backend.is_cluster:
        pytest.skip("CLIENT PAUSE is per node; the standalone servers cover the watchdog")
    gaps: list[Gap] = []
    sub = _sub(rp, ["hb"], on_gap=gaps.append, ping_interval=0.2, ping_timeout=0.3, backoff=(0.05, 0.2))
    try:
        admin(backend).execute_command("CLIENT", "PAUSE", "1200", "ALL")
        _wait(rp, lambda: rp_drain(rp, sub) or any(g.reason == "disconnect" for g in gaps))
        assert "PONG" in next(g for g in gaps if g.reason == "disconnect").error
        rp.call(_pub(rp).publish("hb", "after"))
        m = rp.call(sub.get(timeout=10))
        assert m is not None and m.data == "after"
    finally:
        admin(backend).execute_command("CLIENT", "UNPAUSE")
        rp.call(sub.close())


def test_overflow_drop_oldest_reports_what_it_dropped(rp: Harness) -> None:
    sub = _sub(rp, ["busy"], maxsize=5, overflow="drop_oldest")
    pub = _pub(rp)
    gaps: list[Gap] = []
    sub._on_gap = gaps.append
    try:
        for i in range(20):
            rp.call(pub.publish("busy", i))
        _wait(rp, lambda: sub.stats.received == 20)
        got = [rp.call(sub.get(timeout=10)).data for _ in range(5)]
        assert got == [15, 16, 17, 18, 19]
        assert [(g.reason, g.missed) for g in gaps] == [("overflow", 15)]
        assert sub.stats.dropped == 15
    finally:
        rp.call(sub.close())


def test_overflow_error_policy_stops_the_subscriber(rp: Harness) -> None:
    sub = _sub(rp, ["busy"], maxsize=2, overflow="error")
    pub = _pub(rp)
    try:
        for i in range(10):
            rp.call(pub.publish("busy", i))
        _wait(rp, lambda: sub._buffer.failed)  # nothing consumed: the third message overflowed
        with pytest.raises(SubscriberOverflow):
            rp.call(sub.get(timeout=10))
    finally:
        rp.call(sub.close())


# --------------------------------------------------------------------------- handler mode


def test_handler_runs_in_owned_thread_or_task_and_survives_errors(rp: Harness) -> None:
    seen: list[Any] = []
    errors: list[tuple[str, Any]] = []

    def handler(msg: PubSubMessage) -> None:
        if msg.data == "boom":
            raise RuntimeError("handler failed")
        seen.append(msg.data)

    before = _pubsub_threads()
    sub = _sub(rp, ["jobs"], handler=handler, on_error=lambda e, m: errors.append((str(e), m.data)))
    try:
        if not rp.is_async:
            assert _pubsub_threads() == before + 2  # one reader, one handler
        pub = _pub(rp)
        for data in ("a", "boom", "b"):
            rp.call(pub.publish("jobs", data))
        _wait(rp, lambda: len(seen) == 2)
        assert seen == ["a", "b"]
        assert errors == [("handler failed", "boom")]
    finally:
        rp.call(sub.close())
    assert _pubsub_threads() == before


async def test_async_handler_and_async_iteration(backend: Backend, aclient: Any) -> None:
    seen: list[Any] = []
    gaps: list[Gap] = []

    async def handler(msg: PubSubMessage) -> None:
        await asyncio.sleep(0)
        seen.append(msg.data)

    async def on_gap(gap: Gap) -> None:
        gaps.append(gap)

    async with AsyncSubscriber(["h"], handler=handler, on_gap=on_gap, client=aclient):
        for i in range(3):
            await publish_async("h", i, client=aclient)
        for _ in range(500):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.01)
    assert seen == [0, 1, 2]

    async with AsyncSubscriber(["it"], client=aclient) as sub:
        for i in range(3):
            await publish_async("it", i, client=aclient)
        out = []
        async for msg in sub:
            out.append(msg.data)
            if len(out) == 3:
                break
    assert out == [0, 1, 2]
    assert not gaps


def test_sync_iteration_ends_when_closed_from_another_thread(backend: Backend) -> None:
    c = backend.sync_client()
    sub = Subscriber(["it"], client=c).start()
    publish("it", 1, client=c)
    timer = threading.Timer(0.3, sub.close)
    timer.start()
    out = [m.data for m in sub]  # ends when close() runs
    timer.join()
    assert out == [1]


# --------------------------------------------------------------------------- leaks


def test_subscribe_close_cycles_leak_nothing(rp: Harness, backend: Backend) -> None:
    real_only(backend)
    cycles = 200 if not backend.is_cluster else 60
    warm = _sub(rp, ["leak"])
    rp.call(_pub(rp).publish("leak", 0))  # the publisher's own pooled connection stays open
    rp.call(warm.close())
    threads = _pubsub_threads()
    clients = client_count(backend)
    # another test's live pub/sub connections (a near tier's invalidation links) are not ours
    pubsub = client_count(backend, "TYPE", "pubsub")
    for i in range(cycles):
        sub = _sub(rp, ["leak", f"leak-{i % 7}"], patterns=["p*"] if i % 2 else ())
        if i % 3 == 0:  # close some while the reader is in the middle of a read
            rp.call(_pub(rp).publish("leak", i))
        rp.call(sub.close())
    assert _pubsub_threads() == threads
    assert client_count(backend, "TYPE", "pubsub") == pubsub
    assert client_count(backend) <= clients


def test_sharded_cycles_on_cluster_leak_nothing(rp: Harness, backend: Backend) -> None:
    real_only(backend)
    if not backend.is_cluster:
        pytest.skip("per-node shard connections exist on a cluster only")
    threads = _pubsub_threads()
    pubsub = client_count(backend, "TYPE", "pubsub")  # (another test's live links are not ours)
    for _ in range(30):
        sub = _sub(rp, [f"c{i}" for i in range(9)], sharded=True)
        assert len(sub._links) > 1
        rp.call(sub.close())
    assert _pubsub_threads() == threads
    assert client_count(backend, "TYPE", "pubsub") == pubsub


# --------------------------------------------------------------------------- validation


def test_validation_at_the_edge(backend: Backend) -> None:
    c = backend.sync_client()
    with pytest.raises(TypeError, match="list of names"):
        Subscriber("orders", client=c)
    with pytest.raises(ValueError, match="braces"):
        Subscriber(["a{b}"], client=c)
    with pytest.raises(ValueError, match="at least one"):
        Subscriber([], client=c)
    with pytest.raises(ValueError, match="pattern"):
        Subscriber(["a"], patterns=["b*"], sharded=True, client=c)
    with pytest.raises(ValueError, match="overflow"):
        Subscriber(["a"], overflow="spill", client=c)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="maxsize"):
        Subscriber(["a"], maxsize=0, client=c)
    with pytest.raises(ValueError, match="backoff"):
        Subscriber(["a"], backoff=(2.0, 1.0), client=c)
    with pytest.raises(TypeError, match="AsyncSubscriber"):
        Subscriber(["a"], handler=_async_handler, client=c)
    with pytest.raises(TypeError, match="JSON"):
        publish("a", object(), client=c)
    with pytest.raises(PermissionError):
        Subscriber(["a"], mount=Namespace(Mount(mode="write"), c))
    with pytest.raises(PermissionError):
        publish("a", 1, mount=Namespace(Mount(mode="read"), c))
    sub = Subscriber(["a"], client=c)
    sub.close()
    with pytest.raises(RuntimeError, match="closed"):
        sub.start()


async def _async_handler(msg: PubSubMessage) -> None:
    return None


def test_a_server_without_sharded_pubsub_closes_the_subscriber_in_both_flavours(rp: Harness) -> None:
    """Drift fixed: after the capability check failed the async subscriber was closed, the sync
    one was not (its start() could be called again)."""
    from redispatterns._core.server import ServerInfo
    from redispatterns._runner import _infos
    from redispatterns.errors import UnsupportedByServer

    _infos[rp.client] = ServerInfo("redis", (6, 2, 14))  # what Probe answers for this client
    try:
        sub: Any = rp.pick(Subscriber, AsyncSubscriber)(["a"], sharded=True, client=rp.client)
        with pytest.raises(UnsupportedByServer, match="SSUBSCRIBE"):
            rp.call(sub.start())
        assert sub.closed and "closed" in repr(sub)
        with pytest.raises(RuntimeError, match="closed"):
            rp.call(sub.start())
    finally:
        del _infos[rp.client]


def test_a_sharded_publisher_checks_the_server_until_a_publish_went_through(rp: Harness) -> None:
    """The capability check runs until a sharded publish succeeded on the client, then never
    again (SPUBLISH is known to work there); a new publisher checks afresh."""
    from redispatterns._core.server import ServerInfo
    from redispatterns._runner import _infos
    from redispatterns.errors import UnsupportedByServer

    real = _infos.get(rp.client)
    _infos[rp.client] = ServerInfo("redis", (6, 2, 14))  # what Probe answers for this client
    try:
        pub = _pub(rp, sharded=True)
        with pytest.raises(UnsupportedByServer, match="SPUBLISH"):
            rp.call(pub.publish("checked", 0))
        del _infos[rp.client]
        assert rp.call(pub.publish("checked", 1)) == 0  # probed: the server has it; nobody listens
        _infos[rp.client] = ServerInfo("redis", (6, 2, 14))
        assert rp.call(pub.publish("checked", 2)) == 0  # no probe: it went through before
        with pytest.raises(UnsupportedByServer, match="SPUBLISH"):
            rp.call(_pub(rp, sharded=True).publish("checked", 3))
        assert int(rp.backend.sync_client().get(Names(Mount().keyspace).counter("checked"))) == 2
    finally:
        _infos.pop(rp.client, None)
        if real is not None:
            _infos[rp.client] = real


# --------------------------------------------------------------------------- cluster resharding


def test_shard_channel_whose_slot_moves_follows_it(rp: Harness, backend: Backend) -> None:
    """P7: the slot of one of a connection's shard channels moves to another node: the server's
    sunsubscribe is reported as a gap, the channel is followed to its new node, and the channels
    that stayed keep working."""
    real_only(backend)
    if not backend.is_cluster:
        pytest.skip("slot migration needs a cluster")
    c = admin(backend)
    names = Names(Keyspace("rp:"))
    by_node: dict[str, list[str]] = {}
    for i in range(200):
        by_node.setdefault(c.get_node_from_key(names.channel(f"mv{i}")).name, []).append(f"mv{i}")
    stay, move = next(v for v in by_node.values() if len(v) >= 2)[:2]
    slot_ = c.keyslot(names.channel(move))
    src = c.get_node_from_key(names.channel(move))
    dst = next(n for n in c.get_primaries() if n.name != src.name)
    gaps: list[Gap] = []
    sub = _sub(rp, [stay, move], sharded=True, on_gap=gaps.append, backoff=(0.05, 0.3))
    assert len(sub._links) == 1
    pub = _pub(rp, sharded=True, sequence=False)  # keep the slot empty of keys so it can move back
    try:
        migrate_slot(c, slot_, src, dst)
        _wait(rp, lambda: rp_drain(rp, sub) or any(g.reason == "disconnect" for g in gaps))
        _wait(rp, lambda: len(sub._links) == 2 and rp_live(sub))
        rp.call(pub.publish(stay, "s"))
        rp.call(pub.publish(move, "m"))
        got = sorted((m.channel, m.data) for m in (rp.call(sub.get(timeout=10)) for _ in range(2)))
        assert got == sorted([(stay, "s"), (move, "m")])
        assert any(move in g.channels for g in gaps if g.reason == "disconnect")
    finally:
        rp.call(sub.close())
        migrate_slot(c, slot_, dst, src)
        c.nodes_manager.initialize()


def migrate_slot(c: Any, slot_: int, src: Any, dst: Any) -> None:
    """Move the empty ``slot_`` from primary ``src`` to ``dst`` the way a resharding does, and
    return once every primary names ``dst`` its owner.

    IMPORTING on ``dst`` and MIGRATING on ``src`` first: ``SETSLOT NODE`` on an importing node
    gives it the cluster's highest config epoch, so no heartbeat still in flight can undo the
    move. A bare ``SETSLOT NODE`` on each primary in turn races the cluster bus: a new owner
    with the lower epoch that hears the old owner's claim before the old owner is told hands
    the slot back, and the two then redirect to each other for good (``MOVED`` both ways; on a
    loaded machine that failed this test, or the next one to use the slot)."""
    primaries = c.get_primaries()
    ids = {n.name: rp_str(c.execute_command("CLUSTER", "MYID", target_nodes=n)) for n in primaries}
    c.execute_command("CLUSTER", "SETSLOT", slot_, "IMPORTING", ids[src.name], target_nodes=dst)
    c.execute_command("CLUSTER", "SETSLOT", slot_, "MIGRATING", ids[dst.name], target_nodes=src)
    for node in [dst, src, *(n for n in primaries if n.name not in (src.name, dst.name))]:
        c.execute_command("CLUSTER", "SETSLOT", slot_, "NODE", ids[dst.name], target_nodes=node)

    def owners() -> set[str]:
        seen: set[str] = set()
        for node in primaries:
            for lo, hi, master, *_ in c.execute_command("CLUSTER", "SLOTS", target_nodes=node):
                if lo <= slot_ <= hi:
                    seen.add(rp_str(master[2]))
        return seen

    deadline = time.monotonic() + 10
    while (seen := owners()) != {ids[dst.name]}:
        assert time.monotonic() < deadline, f"the primaries disagree on slot {slot_}'s owner: {seen}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- server restart


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_listener_survives_a_server_restart(server_pool: Any, flavour: str) -> None:
    """P2: the server goes away (refused connections while it is down) and comes back on the same
    port: the handler thread/task is still there, resubscribed, and the gap is reported."""
    from redispatterns.testing.servers import StandaloneServer

    kind = next(iter(server_pool.kinds.values()))
    server = StandaloneServer(kind)
    try:
        seen: list[Any] = []
        gaps: list[Gap] = []
        if flavour == "sync":
            c = rp.connect(server.url, socket_timeout=1.0)
            sub = Subscriber(["r"], client=c, handler=lambda m: seen.append(m.data), on_gap=gaps.append,
                             backoff=(0.05, 0.2)).start()  # fmt: skip
            try:
                publish("r", 1, client=c)
                _poll(lambda: seen == [1])
                server.restart()
                _poll(lambda: any(g.reason == "disconnect" for g in gaps))
                publish("r", 2, client=c)
                _poll(lambda: seen[-1:] == [2])
                assert sub._worker is not None and sub._worker.is_alive()
            finally:
                sub.close()
            assert [g.reason for g in gaps] == ["disconnect"]
            return

        async def main() -> None:
            ac = rp.connect_async(server.url, socket_timeout=1.0)
            sub = await AsyncSubscriber(["r"], client=ac, handler=lambda m: seen.append(m.data),
                                        on_gap=gaps.append, backoff=(0.05, 0.2)).start()  # fmt: skip
            try:
                await publish_async("r", 1, client=ac)
                await _apoll(lambda: seen == [1])
                server.restart()
                await _apoll(lambda: any(g.reason == "disconnect" for g in gaps))
                await publish_async("r", 2, client=ac)
                await _apoll(lambda: seen[-1:] == [2])
                assert sub._worker_task is not None and not sub._worker_task.done()
            finally:
                await sub.close()
                await ac.aclose()

        asyncio.run(main())
    finally:
        server.stop()
    assert [g.reason for g in gaps] == ["disconnect"]


def _poll(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


async def _apoll(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("opts", [{"decode_responses": True}, {"protocol": 3}], ids=["decoded", "resp3"])
def test_clients_that_decode_or_speak_resp3(
    backend: Backend, opts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend.is_fake and "protocol" in opts:
        pytest.skip("fakeredis speaks RESP2 here")
    answered: list[Any] = []  # replies that settled an outstanding PING: its PONG, recognised
    on_reply = LinkState.on_reply

    def spy(self: LinkState, reply: Any, now: float, wall: float) -> Any:
        waiting = self.ping_sent_at is not None
        out = on_reply(self, reply, now, wall)
        if waiting and self.ping_sent_at is None:
            answered.append(reply)
        return out

    monkeypatch.setattr(LinkState, "on_reply", spy)
    c = backend.sync_client(**opts)
    with Subscriber(["d"], patterns=["e*"], client=c, ping_interval=0.05, ping_timeout=10.0) as sub:
        assert publish("d", {"x": 1}, client=c) >= 0
        publish("e1", b"\xff\x00", client=c)
        got = sorted((m.channel, repr(m.data), m.seq) for m in (sub.get(timeout=10) for _ in range(2)) if m)
        assert got == [("d", repr({"x": 1}), 1), ("e1", repr(b"\xff\x00"), 1)]
        deadline = time.monotonic() + 10  # PINGs go out every 0.05 s: three PONGs recognised
        while len(answered) < 3:
            assert time.monotonic() < deadline, f"PONGs not recognised: {answered}"
            time.sleep(0.02)
        assert sub.stats.reconnects == 0 and not sub.gaps


def test_sync_and_async_twins_have_the_same_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        import inspect

        out = {}
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            params = list(inspect.signature(member).parameters) if callable(member) else []
            out[name] = params
        return out

    assert public(Subscriber) == public(AsyncSubscriber)
    assert public(Publisher) == public(AsyncPublisher)


def test_overflow_block_loses_nothing(rp: Harness) -> None:
    sub = _sub(rp, ["slow"], maxsize=2, overflow="block")
    pub = _pub(rp)
    try:
        for i in range(10):
            rp.call(pub.publish("slow", i))
        _wait(rp, lambda: sub.stats.queued == 2)  # the reader waits for room
        got = [rp.call(sub.get(timeout=10)).data for _ in range(10)]
        assert got == list(range(10))
        assert sub.stats.dropped == 0 and not sub.gaps
    finally:
        rp.call(sub.close())


def test_handler_may_close_its_own_subscriber(rp: Harness) -> None:
    holder: list[Any] = []
    seen: list[Any] = []

    def handler(msg: PubSubMessage) -> Any:
        seen.append(msg.data)
        return holder[0].close()  # a coroutine for AsyncSubscriber: awaited by the task

    before = _pubsub_threads()
    sub = _sub(rp, ["bye"], handler=handler)
    holder.append(sub)
    rp.call(_pub(rp).publish("bye", 1))
    _wait(rp, lambda: sub.closed)
    if rp.is_async:
        _wait(rp, lambda: sub._worker_task is not None and sub._worker_task.done())
    else:
        assert sub._worker is not None
        sub._worker.join(10)
    assert seen == [1]
    assert _pubsub_threads() == before


def test_slow_consumer_cut_off_by_the_server_gets_exact_accounting(rp: Harness, backend: Backend) -> None:
    """P5: with overflow="block" a slow consumer stops reading; the server's output buffer limit
    disconnects it. Every published number is then either delivered or inside a reported gap."""
    real_only(backend)
    if backend.is_cluster:
        pytest.skip("the output-buffer limit is per node; the standalone servers cover it")
    c = admin(backend)
    old = c.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    c.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    gaps: list[Gap] = []
    sub = _sub(rp, ["firehose"], maxsize=1, overflow="block", on_gap=gaps.append, backoff=(0.05, 0.2))
    pub = _pub(rp)
    try:
        n = 300  # 15 MB: more than the kernel's socket buffers absorb
        for _ in range(n):
            rp.call(pub.publish("firehose", "x" * 50_000))
        seqs: list[int] = []
        # the consumer was away while the 15 MB went out; now it drains what reached it
        _wait(rp, lambda: rp_take(rp, sub, seqs) or any(g.reason == "disconnect" for g in gaps), 30)
        _wait(rp, lambda: rp_live(sub))
        rp.call(pub.publish("firehose", "last"))
        _wait(rp, lambda: rp_take(rp, sub, seqs) or (bool(seqs) and seqs[-1] == n + 1), 30)
        missing = [
            s
            for g in gaps
            if g.reason == "sequence"
            for s in range(g.first_missing or 0, (g.last_missing or 0) + 1)
        ]
        assert any(g.reason == "disconnect" for g in gaps)
        assert missing, "the server cut the subscriber off, so some messages were lost"
        assert sorted(seqs + missing) == list(range(1, n + 2))
    finally:
        c.config_set("client-output-buffer-limit", old)
        rp.call(sub.close())


def rp_take(rp_: Harness, sub: Any, into: list[int]) -> bool:
    """Drain what is there now (gaps go to on_gap on the way); never true."""
    while (m := rp_.call(sub.get(timeout=0.01))) is not None:
        into.append(m.seq)
    return False


def test_start_against_a_dead_server_raises_and_leaks_nothing(server_pool: Any) -> None:
    from redispatterns.testing.servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here
    c = rp.connect(url, socket_connect_timeout=0.2)
    before = _pubsub_threads()
    with pytest.raises(ServerUnavailable, match=r"not confirmed in 0\.5s \(last error: .*Connect"):
        Subscriber(["x"], client=c, ready_timeout=0.5, backoff=(0.05, 0.1)).start()
    assert _pubsub_threads() == before

    async def main() -> None:
        ac = rp.connect_async(url, socket_connect_timeout=0.2)
        sub = AsyncSubscriber(["x"], client=ac, ready_timeout=0.5, backoff=(0.05, 0.1))
        with pytest.raises(ServerUnavailable, match=r"not confirmed in 0\.5s \(last error: .*Connect"):
            await sub.start()
        assert sub.closed
        assert all(link.task is not None and link.task.done() for link in sub._links)

    asyncio.run(main())


# --------------------------------------------------------------------------- collection (D14)


def test_a_dropped_subscriber_is_closed_when_collected(rp: Harness) -> None:
    """Nothing but its readers (and handler worker) held it: collected, it stops them, returns
    its connections and says so with a ResourceWarning."""
    real_only(rp.backend)
    import gc
    import warnings

    before = client_count(rp.backend, "TYPE", "pubsub")
    seen: list[Any] = []
    handler: Any = seen.append
    if rp.is_async:

        async def handler(m: Any) -> None:
            seen.append(m)

    sub = _sub(rp, ["dropped"], handler=handler)
    ctl = sub._ctl
    links = list(ctl.links)
    _wait(rp, lambda: client_count(rp.backend, "TYPE", "pubsub") == before + len(links))
    rp.call(_pub(rp).publish("dropped", 1))
    _wait(rp, lambda: len(seen) == 1)  # the handler worker runs, holding the subscriber weakly
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del sub
        _wait(rp, lambda: gc.collect() >= 0 and ctl.stopped.is_set())
    assert any(issubclass(w.category, ResourceWarning) and "unclosed" in str(w.message) for w in caught)
    if rp.is_async:
        _wait(rp, lambda: all(link.task is not None and link.task.done() for link in links))
    else:
        for link in links:
            assert link.thread is not None
            link.thread.join(10)
            assert not link.thread.is_alive()
    _wait(rp, lambda: client_count(rp.backend, "TYPE", "pubsub") == before)


def test_each_reconnect_is_logged_once(
    rp: Harness, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed connection: one warning when it is lost, one info line when it is resubscribed
    (a retry that fails in between is logged at debug level only)."""
    real_only(backend)

    caplog.set_level(logging.INFO, logger="redispatterns.pubsub")
    sub = _sub(rp, ["logged"], backoff=(0.05, 0.1), on_gap=lambda g: None)
    try:
        links = len(sub._links)
        kill_pubsub(backend)

        def logged(text: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if text in r.getMessage()]

        # one of each per reconnect (on a Cluster a link may land on a node killed after it)
        _wait(rp, lambda: rp_live(sub) and len(logged("resubscribed")) == sub.stats.reconnects >= links)
        lost, back = logged("connection lost"), logged("resubscribed")
        assert len(lost) == len(back)
        assert all(r.levelno == logging.WARNING for r in lost)
        assert all(r.levelno == logging.INFO for r in back)
    finally:
        rp.call(sub.close())


# --------------------------------------------------------------------------- the read hand-off
# A consumer waiting in get() reads the connection itself when the reader is idle (no wake-up of
# another thread or task per message); these pin that it changes nothing a consumer can see.


def test_two_concurrent_consumers_get_each_message_once_in_order(rp: Harness) -> None:
    """Each consumer stops at the first end marker it takes (one per consumer, published after
    the n messages: once one has stopped, the other takes the next), not after a quiet second,
    which a loaded machine's stalled publisher could give before the last message."""
    sub = _sub(rp, ["shared"])
    pub = _pub(rp)
    n = 200
    end = "end"
    outs: list[list[int]] = [[], []]
    try:
        if rp.is_async:

            async def consume_async(out: list[int]) -> None:
                while (m := await sub.get(timeout=10)) is not None and m.data != end:
                    out.append(m.seq)

            async def body() -> None:
                tasks = [asyncio.create_task(consume_async(o)) for o in outs]
                for i in [*range(n), *(end for _ in outs)]:
                    await pub.publish("shared", i)
                await asyncio.gather(*tasks)

            rp.call(body())
        else:

            def consume(out: list[int]) -> None:
                while (m := sub.get(timeout=10)) is not None and m.data != end:
                    out.append(m.seq)

            threads = [threading.Thread(target=consume, args=(o,)) for o in outs]
            for t in threads:
                t.start()
            for i in [*range(n), *(end for _ in outs)]:
                pub.publish("shared", i)
            for t in threads:
                t.join(30)
        assert sorted(outs[0] + outs[1]) == list(range(1, n + 1))
        assert all(o == sorted(o) for o in outs)  # each consumer sees the channel's order
        assert sub.stats.delivered == n + len(outs) and not sub.gaps
    finally:
        rp.call(sub.close())


def test_connection_killed_under_a_waiting_consumer_gives_the_gap_then_the_message(
    rp: Harness, backend: Backend
) -> None:
    """The consumer blocked in get() is the one reading when the server kills the connection:
    the reader thread/task still reconnects, the consumer gets the gap, then the next message."""
    real_only(backend)
    gaps: list[Gap] = []
    sub = _sub(rp, ["waiting"], on_gap=gaps.append, backoff=(0.05, 0.2))
    pub = _pub(rp)
    try:
        rp.call(pub.publish("waiting", "before"))
        assert rp.call(sub.get(timeout=10)).data == "before"
        if rp.is_async:

            async def body() -> Any:
                waiter = asyncio.create_task(sub.get(timeout=20))
                await asyncio.sleep(0.3)  # the consumer now waits in get(), reading
                kill_pubsub(backend)
                deadline = time.monotonic() + 10
                while not (sub.stats.reconnects >= 1 and rp_live(sub)):
                    assert time.monotonic() < deadline, "not resubscribed in time"
                    await asyncio.sleep(0.01)
                await pub.publish("waiting", "after")
                return await waiter

            got = rp.call(body())
        else:
            box: list[Any] = []
            waiter = threading.Thread(target=lambda: box.append(sub.get(timeout=20)))
            waiter.start()
            time.sleep(0.3)  # the consumer now waits in get(), reading
            kill_pubsub(backend)
            _wait(rp, lambda: sub.stats.reconnects >= 1 and rp_live(sub))
            pub.publish("waiting", "after")
            waiter.join(30)
            got = box[0]
        assert got is not None and (got.data, got.seq) == ("after", 2)
        assert [g.reason for g in gaps] == ["disconnect"]
    finally:
        rp.call(sub.close())


def test_get_with_timeout_zero_polls_the_connection(rp: Harness) -> None:
    sub = _sub(rp, ["poll"])
    try:
        assert rp.call(sub.get(timeout=0)) is None
        rp.call(_pub(rp).publish("poll", "x"))
        deadline = time.monotonic() + 10
        while (m := rp.call(sub.get(timeout=0))) is None:
            assert time.monotonic() < deadline, "a polling consumer never saw the message"
        assert m.data == "x"
    finally:
        rp.call(sub.close())


def test_close_ends_a_consumer_that_is_reading(rp: Harness) -> None:
    sub = _sub(rp, ["closing"])
    before = _pubsub_threads()
    if rp.is_async:

        async def body() -> Any:
            waiter = asyncio.create_task(sub.get(timeout=20))
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await sub.close()
            got = await asyncio.wait_for(waiter, 5)
            return got, time.monotonic() - t0

        got, took = rp.call(body())
    else:
        box: list[Any] = []
        waiter = threading.Thread(target=lambda: box.append(sub.get(timeout=20)))
        waiter.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        sub.close()
        waiter.join(5)
        got, took = box[0], time.monotonic() - t0
        assert _pubsub_threads() == before - 1  # the reader is gone (and the waiter)
    assert got is None and took < 3


async def test_a_reading_consumer_cancelled_leaves_the_connection_usable(
    backend: Backend, aclient: Any
) -> None:
    """``asyncio.wait_for(sub.get(), t)`` cancels a consumer in the middle of its read: the
    connection stays subscribed and in step (no reconnect, no gap), the next message arrives."""
    async with AsyncSubscriber(["cancelled"], client=aclient) as sub:
        for _ in range(5):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sub.get(), 0.05)
        await publish_async("cancelled", "after", client=aclient)
        msg = await sub.get(timeout=10)
        assert msg is not None and (msg.data, msg.seq) == ("after", 1)
        assert sub.stats.reconnects == 0 and not sub.gaps
