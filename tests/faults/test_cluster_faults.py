"""A 3-master + 3-replica cluster through a manual failover of every shard and through slot
migrations (``ASK`` while a slot is half moved, ``MOVED`` after), while locks, a limiter, a
cached function and a stream run from threads on the same objects throughout.

What must hold:
  * nothing acknowledged is lost: every stream entry whose ``add`` returned is there, every
    lock-protected increment whose write returned is counted (no lost update);
  * nothing is applied twice: no stream payload twice; the counter exceeds the acknowledged
    increments by at most the writes that failed (their reply was lost, never retried);
  * the limiter never admits more than its limit; the cache never returns a wrong value;
  * a caller waits a bounded time; failures are ``ServerUnavailable`` only; the same objects
    work again within seconds of the fault ending.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.crc

import redispatterns as rp
from redispatterns.client import _build
from redispatterns.testing.servers import ClusterServer, ServerKind

from .conftest import FaultServers

LIMIT = 400
CALL_BOUND = 5.0  # no call may wait longer, fault or not (socket timeout 1 s here)


def _double(x: int) -> int:
    return 2 * x


class Workload:
    """Pattern objects built once, driven by threads until ``stop()``; outcomes recorded."""

    def __init__(self, client: Any) -> None:
        self.kv = rp.KV(client, {"m": rp.Mount(prefix="fo:")})
        self.lock = rp.Lock("counter", client=client, ttl=2)
        self.limiter = rp.SlidingWindowLimiter(LIMIT, 600, client=client, on_error="raise")
        self.stream = rp.Stream("fo-stream", client=client)
        self.cached: Any = rp.cached(client=client, ttl=60)(_double)
        self.increments = 0  # lock-protected writes whose reply came back
        self.uncertain = 0  # lock-protected writes that failed (applied or not)
        self.allowed = 0
        self.acked: list[str] = []
        self.acked_at: dict[str, float] = {}
        self.failed_adds = 0
        self.wrong_cache: list[tuple[int, Any]] = []
        self.errors: list[tuple[float, BaseException]] = []
        self.slowest = 0.0
        self.calls = 0
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(f,), daemon=True)
            for f in (
                self._locked_increment,
                self._locked_increment,
                self._hit,
                self._add,
                self._add,
                self._cache,
            )
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _loop(self, step: Callable[[int], None]) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                step(n)
            except Exception as exc:
                with self._mutex:
                    self.errors.append((time.monotonic(), exc))
                time.sleep(0.01)
            took = time.monotonic() - started
            with self._mutex:
                self.calls += 1
                self.slowest = max(self.slowest, took)
            time.sleep(0.002)  # a steady load, not a CPU spin on a shared machine

    def _locked_increment(self, n: int) -> None:
        with self.lock.acquire(timeout=10):
            value = self.kv.get_or("m", "counter", 0)
            try:
                self.kv.set("m", "counter", value + 1)
            except Exception:
                with self._mutex:
                    self.uncertain += 1
                raise
            with self._mutex:
                self.increments += 1

    def _hit(self, n: int) -> None:
        if self.limiter.hit("k").allowed:
            with self._mutex:
                self.allowed += 1

    def _add(self, n: int) -> None:
        payload = f"{threading.get_ident()}-{n}"
        try:
            self.stream.add({"p": payload})
        except Exception:
            with self._mutex:
                self.failed_adds += 1
            raise
        with self._mutex:
            self.acked.append(payload)
            self.acked_at[payload] = time.monotonic()

    def _cache(self, n: int) -> None:
        x = n % 20
        got = self.cached(x)
        if got != 2 * x:
            with self._mutex:
                self.wrong_cache.append((x, got))

    def check(self, admin: Any, fault_ended: float, lossy_after: float | None = None) -> dict[str, Any]:
        """Assert every invariant; what was measured, for the report. ``lossy_after``: an
        automatic failover may lose what the dead master acknowledged but had not replicated:
        writes acknowledged after this instant are only counted, not required."""
        kinds = {type(e).__name__ for _, e in self.errors if not isinstance(e, rp.ServerUnavailable)}
        assert not kinds, f"failures other than ServerUnavailable: {kinds}: {self.errors[:3]}"
        assert self.slowest < CALL_BOUND, f"a call waited {self.slowest:.2f} s"
        assert not self.wrong_cache, self.wrong_cache[:5]
        entries = admin.xrange("rp:stream:{fo-stream}")
        present = [p for p in (json.loads(f[b"p"]) for _, f in entries) if p != "probe"]
        assert len(present) == len(set(present)), "a stream entry was written twice"
        lost = set(self.acked) - set(present)
        last_error = max((t for t, _ in self.errors), default=0.0)
        assert self.increments > 0 and self.acked and self.calls > 50, "the workload did not run"
        measured = {
            "calls": self.calls,
            "errors": len(self.errors),
            "slowest_call_s": round(self.slowest, 3),
            "errors_after_fault_s": round(max(0.0, last_error - fault_ended), 3),
            "lost_acknowledged": len(lost),
            "causes": sorted({type(e.__cause__ or e).__name__ for _, e in self.errors}),
        }
        if lossy_after is not None:
            early = [p for p in lost if self.acked_at[p] < lossy_after]
            assert not early, f"{len(early)} entries acknowledged before the replication window lost"
            return measured
        assert not lost, f"{len(lost)} acknowledged stream entries lost"
        assert len(present) <= len(self.acked) + self.failed_adds
        assert self.allowed <= LIMIT
        counter = self.kv.get("m", "counter") or 0
        assert self.increments <= counter <= self.increments + self.uncertain, (
            f"counter {counter}, acknowledged increments {self.increments}, uncertain {self.uncertain}"
        )
        return measured


def _recovers(work: Workload, within: float) -> None:
    """Every pattern answers again through the same objects within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            work.stream.add({"p": "probe"})
            work.limiter.peek("k")
            with work.lock.acquire(timeout=2):
                pass
            return
        except rp.ServerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _run_through(
    cluster: ClusterServer, fault: Callable[[], None], lossy_window: float | None = None
) -> dict[str, Any]:
    client = _build(cluster.url, {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}, asyncio_=False)
    admin: Any = redis.RedisCluster(host="127.0.0.1", port=cluster.master_ports()[0])
    work = Workload(client)
    try:
        work.start()
        time.sleep(0.3)
        began = time.monotonic()
        fault()
        ended = time.monotonic()
        time.sleep(0.5)
        work.stop()
        _recovers(work, within=5.0)
        admin.nodes_manager.initialize()
        lossy_after = None if lossy_window is None else began - lossy_window
        return work.check(admin, ended, lossy_after)
    finally:
        work.stop()
        admin.close()
        client.close()


def test_manual_failover_of_every_shard(server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """CLUSTER FAILOVER on each replica in turn (each master demoted while clients write to it).
    A manual failover waits for the replica to catch up, so nothing acknowledged may be lost."""
    cluster = fault_servers.cluster(server_kind)
    before = cluster.master_ports()

    def failover_all() -> None:
        for replica in cluster.replica_ports():
            cluster.failover(replica)
            time.sleep(0.1)

    measured = _run_through(cluster, failover_all)
    deadline = time.monotonic() + 10  # an old master learns of its demotion by gossip
    while not set(cluster.master_ports()).isdisjoint(before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(cluster.master_ports()).isdisjoint(before)  # every shard changed master
    print("failover:", measured)


def test_slot_migration_ask_then_moved(server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """Every slot holding the workload's keys is migrated to another master (IMPORTING /
    MIGRATING, MIGRATE of its keys, SETSLOT NODE) while the workload runs: clients meet ASK
    during the move and MOVED after."""
    cluster = fault_servers.cluster(server_kind)
    moved: list[int] = []

    def migrate_busy_slots() -> None:
        admin = redis.RedisCluster(host="127.0.0.1", port=cluster.master_ports()[0])
        try:
            keys = list(admin.scan_iter(target_nodes=admin.ALL_NODES))
        finally:
            admin.close()
        # the slot of each pattern's keys (stream, lock, limiter, kv) and of one cached entry
        by_kind: dict[str, int] = {}
        for k in sorted(keys):
            text = k.decode(errors="replace")
            kind = next((w for w in ("stream", "lock", "rl", "fo:", "cache") if w in text), "other")
            by_kind.setdefault(kind, redis.crc.key_slot(k))
        slots = sorted(set(by_kind.values()))
        for slot in slots:
            source = cluster.master_of_slot(slot)
            target = next(p for p in cluster.master_ports() if p != source)
            cluster.begin_migration(slot, target)
            time.sleep(0.05)  # clients meet ASK for keys already moved
            cluster.migrate_keys(slot, source, target, batch=1)
            cluster.finish_migration(slot, target)
            assert cluster.master_of_slot(slot) == target
            moved.append(slot)

    measured = _run_through(cluster, migrate_busy_slots)
    assert len(moved) >= 3, f"the workload's keys were in {moved}"
    print("migration:", measured)


def test_automatic_failover_after_kill_9_of_a_master(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """kill -9 of a master under load; its replica is promoted after the node timeout (2 s).
    Replication is asynchronous, so what the dead master acknowledged in its last instants may
    be gone: must hold that every entry acknowledged more than 1 s before the kill survives,
    nothing is written twice, failures are ServerUnavailable only, no call waits past the bound,
    and the same objects work within seconds of the promotion (the node is restarted after)."""
    cluster = fault_servers.cluster(server_kind)
    victim = cluster.master_ports()[0]

    def kill_and_wait_for_promotion() -> None:
        cluster.kill(victim)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            topo = cluster.topology()
            if len([p for p, n in topo.items() if n["role"] == "master" and n["slots"] and p != victim]) == 3:
                return
            time.sleep(0.05)
        raise AssertionError("no replica was promoted")

    try:
        measured = _run_through(cluster, kill_and_wait_for_promotion, lossy_window=1.0)
    finally:
        cluster.restart(victim)  # it rejoins as a replica of its promoted peer
    assert victim in cluster.replica_ports() or victim in cluster.master_ports()
    print("automatic failover:", measured)
