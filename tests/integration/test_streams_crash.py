"""A consumer process killed with SIGKILL mid-batch loses nothing (real servers, real processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import pytest

from redispatterns.streams import Consumer, Stream

pytestmark = pytest.mark.slow

# The worker: handles entries by recording their ids in a list, and SIGKILLs itself in the middle
# of its first batch (after KILL_AT entries, before any ack reached the server).
WORKER = r"""
import os, signal, sys
import redispatterns as rp
url, stream, name = sys.argv[1:4]
kill_at, min_idle = int(sys.argv[4]), float(sys.argv[5])
client = rp.connect(url)
s = rp.Stream(stream, client=client)
c = rp.Consumer(s, "g", name, count=50, block=0.1, min_idle=min_idle, reclaim_interval=0.1)
seen = 0
def handler(m):
    global seen
    client.rpush("processed", m.id)
    seen += 1
    if kill_at and seen == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
c.run(handler, until_idle=0.5)
"""

N = 300


def _worker(url: str, stream: str, name: str, kill_at: int, min_idle: float) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, url, stream, name, str(kill_at), str(min_idle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def _subset(backend: Any) -> None:
    if backend.is_fake:
        pytest.skip("processes need a real server")
    if backend.kind is not None and backend.kind.name != "redis-7.0":
        pytest.skip("process tests run on one server kind (standalone and cluster)")


def _processed(client: Any) -> list[str]:
    return [x.decode() for x in client.lrange("processed", 0, -1)]


def test_kill9_mid_batch_then_another_consumer_takes_over(backend: Any) -> None:
    _subset(backend)
    client = backend.sync_client()
    s = Stream("crash", client=client)
    produced = s.add_many([{"n": i} for i in range(N)])
    assert _worker(backend.url, "crash", "doomed", kill_at=20, min_idle=0.5) == -signal.SIGKILL
    first_batch = set(produced[:50])
    assert set(_processed(client)) <= first_batch and len(_processed(client)) == 20
    assert int(client.xpending(s.key, "g")["pending"]) == 50  # nothing acked: acks ride with reads

    survivor = Consumer(s, "g", "survivor", block=0.1, min_idle=0.5, reclaim_interval=0.1)
    stats = survivor.run(lambda m: client.rpush("processed", m.id), until_idle=1.0)
    done = _processed(client)
    assert set(done) == set(produced)  # every id processed at least once
    dupes = {i for i in done if done.count(i) > 1}
    assert dupes <= first_batch  # only the dead consumer's in-flight batch ran twice
    assert stats.reclaimed == 50
    assert int(client.xpending(s.key, "g")["pending"]) == 0
    assert s.dead_letters() == []


def test_kill9_then_restart_with_the_same_name_recovers_its_own_pending_at_once(backend: Any) -> None:
    _subset(backend)
    client = backend.sync_client()
    s = Stream("crash", client=client)
    produced = s.add_many([{"n": i} for i in range(N)])
    assert _worker(backend.url, "crash", "worker-1", kill_at=20, min_idle=3600) == -signal.SIGKILL
    # same name, reclaim of others' entries effectively off (min_idle 1 h): only its own pending
    # list can bring the 50 back, and it does so at start
    assert _worker(backend.url, "crash", "worker-1", kill_at=0, min_idle=3600) == 0
    done = _processed(client)
    assert set(done) == set(produced)
    assert len(done) == N + 20
    assert int(client.xpending(s.key, "g")["pending"]) == 0
    info = client.xinfo_consumers(s.key, "g")
    assert [c["name"] for c in info] == [b"worker-1"]


# A worker whose handler kills its own process on the poison entry, every time.
POISON_WORKER = r"""
import os, sys
import redispatterns as rp
url, stream, name = sys.argv[1:4]
client = rp.connect(url)
c = rp.Consumer(rp.Stream(stream, client=client), "g", name, count=50, block=0.1,
                min_idle=0.3, reclaim_interval=0.1, max_deliveries=3)
def handler(m):
    client.rpush("tries", m.id)
    if m["poison"]:
        os._exit(1)
    client.rpush("processed", m.id)
c.run(handler, until_idle=0.8)
"""


def test_entry_that_kills_its_process_is_tried_max_deliveries_times_and_spares_its_batch(
    backend: Any,
) -> None:
    _subset(backend)
    client = backend.sync_client()
    s = Stream("poison", client=client)
    ids = s.add_many([{"poison": i == 2} for i in range(11)])
    codes = []
    for run in range(6):  # a supervisor restarting the worker (a new process, a new name)
        proc = subprocess.run(
            [sys.executable, "-c", POISON_WORKER, backend.url, "poison", f"w{run}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
        assert proc.returncode == 1, proc.stderr[-3000:]
    assert codes == [1, 1, 1, 0]
    tries = [x.decode() for x in client.lrange("tries", 0, -1)]
    assert tries.count(ids[2]) == 3  # exactly max_deliveries, then never again
    assert set(_processed(client)) == set(ids) - {ids[2]}
    (dead,) = s.dead_letters()  # only the poison: its batch mates were not charged its crashes
    assert dead.id == ids[2] and dead.deliveries == 3 and "no ack after 3 deliveries" in dead.error
    assert int(client.xpending(s.key, "g")["pending"]) == 0


# A worker with 8 handler threads that SIGKILLs itself while several calls are in flight.
CONCURRENT_WORKER = r"""
import os, signal, sys, threading, time
import redispatterns as rp
url, stream, name, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = rp.connect(url)
c = rp.Consumer(rp.Stream(stream, client=client), "g", name, count=40, block=0.1, min_idle=0.5,
                reclaim_interval=0.1, concurrency=8, order_by="k")
lock = threading.Lock()
seen = [0]
def handler(m):
    time.sleep(0.01)
    client.rpush("processed", m.id)
    with lock:
        seen[0] += 1
        if kill_at and seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
c.run(handler, until_idle=0.5)
"""


def test_kill9_of_a_concurrent_worker_loses_nothing(backend: Any) -> None:
    _subset(backend)
    client = backend.sync_client()
    s = Stream("crash", client=client)
    produced = s.add_many([{"n": i, "k": i % 5} for i in range(200)])

    def run(name: str, kill_at: int) -> int:
        proc = subprocess.run(
            [sys.executable, "-c", CONCURRENT_WORKER, backend.url, "crash", name, str(kill_at)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        return proc.returncode

    assert run("doomed", 25) == -signal.SIGKILL
    assert int(client.xpending(s.key, "g")["pending"]) > 0  # in flight when it died, never acked
    assert run("survivor", 0) == 0
    done = _processed(client)
    assert set(done) == set(produced)  # nothing lost
    assert len(done) - len(set(done)) <= 40  # only the dead worker's batch can run twice
    assert int(client.xpending(s.key, "g")["pending"]) == 0 and s.dead_letters() == []
