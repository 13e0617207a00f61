"""Near tiers across a Cluster's topology changes (3 masters + 3 replicas): a manual failover and
a kill -9 of the master that holds the keys, while a writer (no near tier) writes an increasing
counter and a reader with a near tier reads it in a loop.

What must hold: the failover flushes the reader's local tier; the invalidation links follow the
new primary (a write after the failover is heard: the reader sees it, then serves it locally);
no read goes back in time, and no read returns a value older than the last write acknowledged
more than :data:`BOUND` before the read began (a missed invalidation would be stale until the
records' TTL, an hour here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis.crc

from loadtests.harness import count_round_trips
from redispatterns import Mount, ServerUnavailable
from redispatterns.client import _build
from redispatterns.kv import KV
from redispatterns.testing.servers import ClusterServer, ServerKind

from .conftest import FaultServers

MOUNTS = {"m": Mount(prefix="{nearfo}:", ttl=3600)}
SLOT = redis.crc.key_slot(b"nearfo")
BOUND = 0.005  # s: as tests/integration/near_checker.py (a read never lags a quiet link)
OPTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def _local(kv: KV, key: str, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with count_round_trips() as n:
                value = kv.get("m", key)
        except Exception:
            value, n.n = None, 1
        if n.n == 0:
            return value
        time.sleep(0.01)
    raise AssertionError("no local read: the links never came back")


class Checked:
    """A writer thread (acknowledged writes with their time) and a reader thread (each read
    with the time it began), checked after ``stop()``."""

    def __init__(self, reader: KV, writer: KV) -> None:
        self.reader, self.writer = reader, writer
        self.acked: list[tuple[int, float]] = []
        self.reads: list[tuple[float, int]] = []
        self.stop_ = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._write, self._read)]

    def _write(self) -> None:
        i = 0
        while not self.stop_.is_set():
            i += 1
            try:
                self.writer.set("m", "c", i)
            except Exception:  # during the failover: uncertain, never counted as acknowledged
                time.sleep(0.01)
                continue
            self.acked.append((i, time.monotonic()))
            time.sleep(0.002)

    def _read(self) -> None:
        while not self.stop_.is_set():
            began = time.monotonic()
            try:
                value = self.reader.get("m", "c")
            except Exception:
                time.sleep(0.01)
                continue
            self.reads.append((began, value or 0))
            time.sleep(0.0005)  # local hits hold the GIL: let the writer and the links run

    def wait_acked(self, n: int, timeout: float) -> None:
        """Until ``n`` more writes are acknowledged (the writer's client found the new primary)."""
        target, deadline = len(self.acked) + n, time.monotonic() + timeout
        while len(self.acked) < target:
            assert time.monotonic() < deadline, f"the writer never recovered: {len(self.acked)} acknowledged"
            time.sleep(0.01)

    def __enter__(self) -> Checked:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_.set()
        for t in self.threads:
            t.join(30)

    def check(self) -> None:
        last, stale = 0, []
        for began, value in self.reads:
            assert value >= last, f"a read went back in time: {value} after {last}"
            last = value
            floor = max((i for i, at in self.acked if at < began - BOUND), default=0)
            if value < floor:
                stale.append((began, value, floor))
        assert not stale, f"{len(stale)} stale reads, first: {stale[0]}"
        assert len(self.acked) > 20 and len(self.reads) > 20


def _through(cluster: ClusterServer, fault: Callable[[int], None]) -> None:
    reader = KV(_build(cluster.url, OPTS, asyncio_=False), MOUNTS, near=True)
    writer = KV(_build(cluster.url, OPTS, asyncio_=False), MOUNTS)
    writer.set("m", "c", 0)
    _local(reader, "c")
    near = reader._near
    assert near is not None and near.link is not None
    tracking, stats = near.link, near.stats
    flushes, changes = stats.flushes, tracking.topology_changes
    master = cluster.master_of_slot(SLOT)
    with Checked(reader, writer) as checked:
        time.sleep(0.5)
        fault(master)
        checked.wait_acked(20, timeout=30)
        deadline = time.monotonic() + 10  # the watcher reads the topology every 0.5 s
        while tracking.topology_changes == changes:
            assert time.monotonic() < deadline, "the topology change was never seen"
            time.sleep(0.05)
        time.sleep(0.2)  # reads and writes across the flush
    checked.check()
    new_master = cluster.master_of_slot(SLOT)
    assert new_master != master
    assert stats.flushes > flushes and tracking.topology_changes > changes
    deadline = time.monotonic() + 15
    while not tracking.linked.get(("127.0.0.1", new_master)):
        assert time.monotonic() < deadline, f"no live link to the new primary: {tracking.linked}"
        time.sleep(0.05)
    # invalidations flow from the new primary: a write there is heard, then kept locally
    _local(reader, "c")
    deadline = time.monotonic() + 10
    while True:  # the writer's own client may still name the dead primary once
        try:
            writer.set("m", "c", -1)
            break
        except ServerUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    deadline = time.monotonic() + 5
    while reader.get("m", "c") != -1:
        assert time.monotonic() < deadline, "the new primary's invalidation was never heard"
        time.sleep(0.001)
    assert _local(reader, "c") == -1


def test_a_manual_failover_flushes_the_tier_and_links_the_new_primary(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    cluster = fault_servers.cluster(server_kind)

    def failover(master: int) -> None:
        replica = next(p for p, n in cluster.topology().items() if n["master"] == master)
        cluster.failover(replica)

    _through(cluster, failover)


def test_a_killed_primary_flushes_the_tier_and_its_promoted_replica_is_linked(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    cluster = fault_servers.cluster(server_kind)
    victim: list[int] = []

    def kill(master: int) -> None:
        victim.append(master)
        cluster.kill(master)
        deadline = time.monotonic() + 20
        while cluster.master_of_slot(SLOT) == master:
            assert time.monotonic() < deadline, "no replica was promoted"
            time.sleep(0.05)

    try:
        _through(cluster, kill)
    finally:
        if victim:
            cluster.restart(victim[0])
