"""Locks: uncontended acquire + release against the floor, peers side by side, and contention.

Floor: the same work by hand with redis-py: one EVALSHA that does SET NX PX and INCRs the fence
counter (one round trip, like ours), then one EVALSHA compare-and-delete; asyncio cases against
the same on a plain redis.asyncio client. Ours: a ``Lock`` built per use on the default client
(``connect()`` / ``connect_async()``) and a prebuilt one. Peers (optional):
redis-py ``Lock``, python-redis-lock, walrus ``Lock`` (against that floor); our ``Redlock`` and
pottery ``Redlock`` on one master against SET NX PX + EVALSHA compare-and-delete.

Contention (printed before the table): 8 threads x 200 cycles of GET + SET under one lock,
for ours and redis-py's Lock: throughput, lost updates, median and longest wait for the lock.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

import redispatterns as rp
from loadtests.harness import BenchCase, main
from redispatterns.lock import AsyncLock, Lock, Redlock

FLOOR_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0
"""
FLOOR_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
FLOOR_KEYS = ("bench:floor:{lock}", "bench:floor:{lock}:fence")


def _floor(raw: redis.Redis) -> Callable[[], Any]:
    acq, rel = raw.script_load(FLOOR_ACQUIRE), raw.script_load(FLOOR_RELEASE)

    def floor() -> Any:
        token = secrets.token_hex(16)
        fence = raw.evalsha(acq, 2, *FLOOR_KEYS, token, 30000)
        raw.evalsha(rel, 1, FLOOR_KEYS[0], token)
        return fence

    return floor


def _async_floor(url: str) -> Callable[[], Any]:
    state: dict[Any, Any] = {}

    async def floor() -> Any:
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:  # the harness runs each case in its own loop
            state["loop"] = loop
            state["c"] = c = redis.asyncio.Redis.from_url(url)
            state["acq"] = await c.script_load(FLOOR_ACQUIRE)
            state["rel"] = await c.script_load(FLOOR_RELEASE)
        c = state["c"]
        token = secrets.token_hex(16)
        fence = await c.evalsha(state["acq"], 2, *FLOOR_KEYS, token, 30000)
        await c.evalsha(state["rel"], 1, FLOOR_KEYS[0], token)
        return fence

    return floor


def _timed(
    t0: float, waits: list[float], lock: threading.Lock, body: Callable[[], None]
) -> Callable[[], None]:
    def timed() -> None:
        with lock:
            waits.append(time.perf_counter() - t0)  # how long this cycle waited for the lock
        body()

    return timed


def contention(make_cycle: Callable[[], Callable[[Callable[[], None]], None]], raw: redis.Redis) -> str:
    """8 threads x 200 cycles; returns a one-line summary."""
    counter = "bench:contention:{n}"
    raw.delete(counter)
    waits: list[float] = []
    lock = threading.Lock()

    def critical() -> None:
        v = int(raw.get(counter) or 0)
        raw.set(counter, v + 1)

    def worker() -> None:
        cycle = make_cycle()
        for _ in range(200):
            cycle(_timed(time.perf_counter(), waits, lock, critical))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    n = int(raw.get(counter) or 0)
    return (
        f"{1600 / took:7.0f} cycles/s, count {n}/1600, wait median {statistics.median(waits) * 1e3:.2f} ms, "
        f"longest {max(waits) * 1e3:.1f} ms"
    )


def cases(url: str) -> list[BenchCase]:
    raw = redis.Redis.from_url(url)
    rp.configure(url)  # the per-use cases run on the default client: connect()'s / connect_async()'s
    client = rp.connect(url)
    lock = Lock("bench", 30, client=client)

    def ours() -> Any:
        with lock as held:
            return held.fence

    def per_use() -> Any:
        with Lock("bench:per-use", 30) as held:
            return held.fence

    async def aours() -> Any:
        async with AsyncLock("bench:async", 30) as held:
            return held.fence

    astate: dict[Any, Any] = {}

    async def aprebuilt() -> Any:
        loop = asyncio.get_running_loop()
        lk = astate.get(loop)
        if lk is None:
            lk = astate[loop] = AsyncLock("bench:async-prebuilt", 30)
        async with lk as held:
            return held.fence

    out = [
        BenchCase("lock", "with Lock(name): built per use (fenced)", per_use, _floor(raw)),
        BenchCase("lock", "with lock: prebuilt Lock (fenced)", ours, _floor(raw)),
        BenchCase("lock", "async with AsyncLock(name): per use", aours, _async_floor(url), is_async=True),
        BenchCase("lock", "async with lock: prebuilt AsyncLock", aprebuilt, _async_floor(url), is_async=True),
    ]

    # Redlock on one master: the per-node work is SET NX PX + compare-and-delete, sent in parallel
    redlock = Redlock("bench", [client], ttl=30, node_timeout=1.0)
    delete_if = raw.script_load(FLOOR_RELEASE)

    def redlock_floor() -> Any:
        token = secrets.token_hex(16)
        raw.set("bench:floor:{redlock}", token, nx=True, px=30000)
        return raw.evalsha(delete_if, 1, "bench:floor:{redlock}", token)

    def ours_redlock() -> Any:
        held = redlock.acquire()
        held.release()
        return held.votes

    out.append(
        BenchCase(
            "lock",
            "Redlock, 1 master (thread fan-out)",
            ours_redlock,
            redlock_floor,
            note="floor: SET NX PX + EVALSHA compare-and-delete by hand",
        )
    )

    pylock = raw.lock("bench:redis-py", timeout=30)

    def redis_py() -> Any:
        pylock.acquire()
        pylock.release()

    out.append(BenchCase("lock", "peer: redis-py Lock (no fence)", redis_py, _floor(raw)))
    try:
        import redis_lock

        def prl() -> Any:
            lk = redis_lock.Lock(raw, "bench:prl", expire=30)
            lk.acquire()
            lk.release()

        out.append(BenchCase("lock", "peer: python-redis-lock", prl, _floor(raw)))
    except ImportError:
        pass
    try:
        import walrus

        wdb = walrus.Database.from_url(url)
        wl = wdb.lock("bench:walrus", ttl=30000)

        def wal() -> Any:
            wl.acquire()
            wl.release()

        out.append(BenchCase("lock", "peer: walrus Lock", wal, _floor(raw)))
    except ImportError:
        pass
    try:
        from pottery import Redlock as PotteryRedlock

        pl = PotteryRedlock(key="bench:pottery", masters={raw}, auto_release_time=30)

        def pot() -> Any:
            pl.acquire()
            pl.release()

        out.append(BenchCase("lock", "peer: pottery Redlock (1 master)", pot, redlock_floor))
    except ImportError:
        pass

    # contention, measured once and shown before the table
    contended = Lock("bench:contended", 30, client=client)

    def ours_cycle() -> Callable[[Callable[[], None]], None]:
        def cycle(body: Callable[[], None]) -> None:
            with contended:
                body()

        return cycle

    def redis_py_cycle() -> Callable[[Callable[[], None]], None]:
        lk = raw.lock("bench:contended:redis-py", timeout=30)

        def cycle(body: Callable[[], None]) -> None:
            with lk:
                body()

        return cycle

    print("contention, 8 threads x 200 cycles (GET + SET under the lock):", flush=True)
    print(f"  redispatterns Lock : {contention(ours_cycle, raw)}", flush=True)
    print(f"  redis-py Lock      : {contention(redis_py_cycle, raw)}", flush=True)
    return out


def teardown() -> None:
    rp.configure()


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
