"""Locks across processes: pause safety (SIGSTOP), kill -9, 8 processes x 200, 50 blocked waiters.

Real servers only, on a subset of backends (the standalone servers and one cluster kind).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from redispatterns.errors import LockTimeout
from redispatterns.lock import Lock
from redispatterns.testing.plugin import Backend
from redispatterns.testing.servers import find_server_kinds

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import json, sys, time
import redispatterns as rp
from redispatterns.lock import Lock

url, name, ttl, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
lost = []
lock = Lock(name, ttl, client=rp.connect(url), auto_renew=True, on_lost=lambda h: lost.append(1))
held = lock.acquire()
print(json.dumps({"fence": held.fence, "token": held.token}), flush=True)
if mode == "sleep":
    time.sleep(60)
sys.stdin.readline()  # "working" while the test pauses this process past its lease
out = {"lost_callback": bool(lost), "lost": held.lost}
for action in ("fenced_set", "extend", "release"):
    try:
        if action == "fenced_set":
            held.fenced_set("ledger", "from-A")
        elif action == "extend":
            held.extend()
        else:
            held.release()
        out[action] = "ok"
    except Exception as exc:
        out[action] = type(exc).__name__
print(json.dumps(out), flush=True)
"""

COUNTER = """
import sys
import redispatterns as rp
from redispatterns.lock import Lock

url, n = sys.argv[1], int(sys.argv[2])
client = rp.connect(url)
lock = Lock("counter", 5, client=client)
for _ in range(n):
    with lock:
        v = int(client.get("rp:test:{counter}:n") or 0)
        client.set("rp:test:{counter}:n", v + 1)
"""


@functools.cache
def _primary_kind() -> str:
    kinds = find_server_kinds()
    return kinds[0].name if kinds else ""


def _real(backend: Backend, *, cluster: bool = True) -> str:
    """Process tests run on the first server kind found: standalone, and cluster when ``cluster``."""
    if backend.is_fake:
        pytest.skip("processes need a real server")
    if backend.kind is None or backend.kind.name != _primary_kind():
        pytest.skip("process tests run on the first server kind only")
    if backend.is_cluster and not cluster:
        pytest.skip("standalone is enough here")
    assert backend.url is not None
    return backend.url


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )


def _line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        raise AssertionError(f"holder died: {proc.stderr.read()}")
    return dict(json.loads(line))


def test_a_paused_holder_cannot_harm_the_next_one(backend: Backend) -> None:
    url = _real(backend)
    ttl = 0.4
    with _spawn(HOLDER, url, "ledger-lock", str(ttl), "pause") as a:
        first = _line(a)
        os.kill(a.pid, signal.SIGSTOP)  # a GC pause / VM stall: no renewal, no progress
        try:
            b_lock = Lock("ledger-lock", 5, client=backend.sync_client())
            b = b_lock.acquire(timeout=5)  # woken when A's lease runs out
            b.fenced_set("ledger", "from-B")
        finally:
            os.kill(a.pid, signal.SIGCONT)
        time.sleep(0.3)  # let A's renewal thread find out
        assert a.stdin is not None
        a.stdin.write("go\n")
        a.stdin.flush()
        result = _line(a)
        a.kill()
    assert b.fence > first["fence"]  # fencing tokens strictly increase
    assert result == {
        "lost_callback": True,  # the renewal thread noticed and said so
        "lost": True,
        "fenced_set": "LockLost",  # the stale write was refused by the fence check
        "extend": "LockNotOwned",  # and did not recreate the key
        "release": "LockNotOwned",  # and did not delete B's lock
    }
    assert b.owned()
    assert b_lock.fenced_get("ledger") == "from-B"
    b.release()


def test_kill_9_of_the_holder_frees_the_lock_within_its_ttl(backend: Backend) -> None:
    url = _real(backend)
    ttl = 1.0
    with _spawn(HOLDER, url, "crash-lock", str(ttl), "sleep") as a:
        _line(a)
        time.sleep(0.5)  # past one renewal: the lease was being kept alive
        a.send_signal(signal.SIGKILL)
        killed = time.monotonic()
    held = Lock("crash-lock", 5, client=backend.sync_client()).acquire(timeout=3)
    assert time.monotonic() - killed < ttl + 0.5
    held.release()


def test_processes_sharing_a_lock_never_lose_an_update(backend: Backend) -> None:
    url = _real(backend, cluster=False)  # threads and tasks cover the other backends
    procs = [_spawn(COUNTER, url, "200") for _ in range(8)]
    for p in procs:
        with p:
            _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert int(backend.sync_client().get("rp:test:{counter}:n")) == 1600


def _calls(client: Any) -> int:
    """Commands the lock sent: its scripts (EVALSHA) and blocking waits (BLPOP). commandstats also
    counts the commands run inside scripts, so those are not summed."""
    stats = client.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_blpop"))


def test_fifty_waiters_block_instead_of_polling_and_hand_over_promptly(backend: Backend) -> None:
    _real(backend, cluster=False)  # INFO commandstats is per node
    client = backend.sync_client()
    lock = Lock("crowd", 10, client=client)
    holder = lock.acquire()
    acquired: list[float] = []
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            held = lock.acquire(timeout=20)
            acquired.append(time.monotonic())
            held.release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(50)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 15
    while client.info("clients")["blocked_clients"] < 50:
        assert time.monotonic() < deadline, "waiters did not block"
        time.sleep(0.02)
    client.config_resetstat()
    time.sleep(1.5)  # a 0.1 s poller would send 750 commands here
    assert _calls(client) == 0
    released = time.monotonic()
    holder.release()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(acquired) == 50
    acquired.sort()
    assert acquired[0] - released < 0.5  # the next waiter is woken by the release, not its 10 s bound
    assert acquired[-1] - released < 5  # 50 hand-overs in a chain, none waiting out a bound
    assert _calls(client) < 50 * 4  # per hand-over: a release, an acquire (+ a rare retry)


def test_timeouts_of_waiters_leave_the_lock_usable(backend: Backend) -> None:
    _real(backend, cluster=False)
    client = backend.sync_client()
    lock = Lock("brief", 5, client=client)
    holder = lock.acquire()
    outcomes: list[str] = []

    def waiter() -> None:
        try:
            lock.acquire(timeout=0.2).release()
            outcomes.append("got")
        except LockTimeout:
            outcomes.append("timeout")

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["timeout"] * 10
    holder.release()
    lock.acquire(timeout=1).release()
