"""Near tiers against the round trip they save: a near hit (``@cached(near=True)``, sync and
async; ``KV(near=True).get``) against GET + ``orjson.loads`` by hand on the same server, a Redis
hit of the same function and KV read beside them, and redis-py's own client-side cache
(``CacheConfig``, RESP3) on the same key when the server is one redis-py accepts for it (else the
case is left out and the reason printed and written in the near-hit note).

Two figures that are not per-call ratios are measured when the cases are built and printed (and
carried in the notes): the invalidation delay (p50 / p99, from a write acknowledged in another
*process* to the moment this process's local copy is gone, and how many reads that began after the
acknowledgement still returned the old value) and the memory one local entry takes
(``tracemalloc`` over 10,000 entries of the payload below).

``python -m loadtests.bench_near --delay`` prints the two figures alone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns import Mount
from redispatterns._core.near import NearStore, compact
from redispatterns._tracking import QUIET_WINDOW
from redispatterns.cache import cached
from redispatterns.client import connect
from redispatterns.kv import KV, AsyncKV

PAYLOAD = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin", "dev"],
           "score": 9.5, "active": True, "tags": {"team": "core", "tier": 3}}  # fmt: skip
FLOOR_KEY = "benchnear:floor"
CACHE_MOUNT = Mount(prefix="benchnear:")  # its own prefix: BCAST reports every write under it
KV_MOUNTS = {"user": Mount(prefix="benchnearkv:")}
DELAY_MOUNTS = {"d": Mount(prefix="benchneardelay:")}


def _until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the near tier never served a local hit (invalidation links down?)")
        time.sleep(0.005)


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    c.set(FLOOR_KEY, orjson.dumps(PAYLOAD))

    def floor() -> Any:
        return orjson.loads(cast(bytes, c.get(FLOOR_KEY)))

    @cached(ttl=3600, client=c, mount=CACHE_MOUNT, name="bench.near", near=True)
    def near_user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    @cached(ttl=3600, client=c, mount=CACHE_MOUNT, name="bench.redis")
    def redis_user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    redis_user(42)
    near_user(42)
    near_stats = near_user.stats.near
    assert near_stats is not None
    _until(lambda: near_user(42) is not None and near_stats.hits > 0)

    kv = KV(c, KV_MOUNTS, near=True)
    plain_kv = KV(c, KV_MOUNTS)
    plain_kv.set("user", "profile", PAYLOAD)
    kv_stats = kv.near_stats
    assert kv_stats is not None
    _until(lambda: kv.get("user", "profile") is not None and kv_stats.hits > 0)

    state: dict[str, Any] = {}

    def on_loop() -> dict[str, Any]:
        """The async objects of the running loop (each async case runs in its own loop)."""
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:
            ac = redis.asyncio.Redis.from_url(url)
            state.update(loop=loop, raw=ac, kv=AsyncKV(ac, KV_MOUNTS, near=True))

            @cached(ttl=3600, client=ac, mount=CACHE_MOUNT, name="bench.near", near=True)
            async def anear(user_id: int) -> dict[str, Any]:
                return PAYLOAD

            state["near"] = anear
        return state

    async def anear_hit() -> Any:
        return await on_loop()["near"](42)

    async def akv_hit() -> Any:
        return await on_loop()["kv"].get("user", "profile")

    async def afloor() -> Any:
        return orjson.loads(cast(bytes, await on_loop()["raw"].get(FLOOR_KEY)))

    d = invalidation_delay(url)
    per_entry, accounted = memory_per_entry()
    csc_case, csc_why = _cache_config_case(url, floor)
    figures = (
        f"invalidation delay p50 {d.p50:.3f} ms, p99 {d.p99:.3f} ms ({d.writes} writes by another "
        f"process); {d.stale_reads} reads that began at most {d.stale_max:.3f} ms after an "
        f"acknowledged write returned the old value (the tier promises {QUIET_WINDOW * 1000:.1f} ms"
        f"{'' if d.stale_max <= QUIET_WINDOW * 1000 else ': BROKEN'}); "
        f"{per_entry:.0f} B per local entry measured ({accounted:.0f} B counted against max_bytes)"
    )
    print(f"  near: {figures}")
    if csc_why:
        print(f"  near: redis-py CacheConfig skipped: {csc_why}")
    out = [
        BenchCase("near", "near hit: @cached(near=True), no I/O", lambda: near_user(42), floor,
                  note=f"floor: GET + orjson.loads by hand (a Redis hit's round trip); {figures}"
                  + (f"; redis-py CacheConfig skipped: {csc_why}" if csc_why else "")),
        BenchCase("near", "near hit async: @cached(near=True)", anear_hit, afloor, is_async=True,
                  note="floor: GET + orjson.loads on a plain redis.asyncio client"),
        BenchCase("near", "Redis hit: @cached, same key set", lambda: redis_user(42), floor),
        BenchCase("near", "KV near get: KV(near=True).get", lambda: kv.get("user", "profile"), floor),
        BenchCase("near", "KV near get async: AsyncKV(near=True)", akv_hit, afloor, is_async=True),
        BenchCase("near", "KV get from Redis (no near)", lambda: plain_kv.get("user", "profile"), floor),
    ]  # fmt: skip
    if csc_case is not None:
        out.append(csc_case)
    return out


def teardown() -> None:
    """Stop the invalidation links before the harness stops its server (no "link lost" noise)."""
    from redispatterns import _tracking

    for t in list(_tracking._trackers):
        t.close()


def _cache_config_case(url: str, floor: Any) -> tuple[BenchCase | None, str]:
    """redis-py's client-side cache on the floor's key, or why it cannot run here."""
    try:
        from redis.cache import CacheConfig

        csc = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
        csc.get(FLOOR_KEY)
    except Exception as exc:  # refused by redis-py for this server (or absent): say so
        return None, f"{type(exc).__name__}: {exc}"

    def csc_hit() -> Any:
        return orjson.loads(cast(bytes, csc.get(FLOOR_KEY)))

    csc_hit()
    return BenchCase("near", "peer redis-py CacheConfig hit (RESP3, sync)", csc_hit, floor), ""


def _writer(url: str, conn: Any) -> None:
    """Process A: write the value it is sent, answer with its monotonic clock after the ack."""
    kv = KV(url, DELAY_MOUNTS)
    while True:
        i = conn.recv()
        if i is None:
            return
        kv.set("d", "x", i)
        conn.send(time.monotonic())  # CLOCK_MONOTONIC: one clock for every process


@dataclass
class Delay:
    """What :func:`invalidation_delay` measured (ms)."""

    p50: float  # write acknowledged in A -> local copy gone in B (the link's thread applied it)
    p99: float
    writes: int
    stale_reads: int  # reads in B that began after the acknowledgement and returned the old value
    stale_max: float  # the latest such read, after the acknowledgement


def invalidation_delay(url: str, n: int = 300) -> Delay:
    """From a write acknowledged in another process (A) to this process (B).

    First ``n`` writes while B waits yielding the GIL (as an application doing I/O): how long
    until the link's thread has dropped B's local copy (0 when it was gone before A had its
    reply: the server sends the invalidation first). Then ``n`` writes while B reads in a tight
    loop (its thread holds the GIL between local hits): how many reads that began after the
    acknowledgement still returned the old value, and the latest of them."""
    reader = KV(url, DELAY_MOUNTS, near=True)
    near = reader._near
    assert near is not None
    record = reader._store.spec("d").record("x")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_writer, args=(url, child), daemon=True)
    proc.start()
    delays: list[float] = []
    stale: list[float] = []
    try:
        parent.send(0)
        parent.recv()
        for i in range(1, 2 * n + 1):
            _until(lambda: reader.get("d", "x") is not None and near.near.holds(record))
            parent.send(i)
            if i <= n:
                while near.near.holds(record):
                    time.sleep(0)
                gone = time.monotonic()
                delays.append(max(0.0, gone - parent.recv()) * 1000)
                continue
            acked: float | None = None
            while True:
                began = time.monotonic()
                value = reader.get("d", "x")
                if acked is None and parent.poll():
                    acked = parent.recv()
                if acked is not None and began > acked and value != i:
                    stale.append((began - acked) * 1000)
                if value == i and acked is not None:
                    break
    finally:
        parent.send(None)
        proc.join(10)
    delays.sort()
    p99 = delays[int(0.99 * (len(delays) - 1))]
    return Delay(statistics.median(delays), p99, len(delays), len(stale), max(stale, default=0.0))


def memory_per_entry(n: int = 10_000) -> tuple[float, float]:
    """Bytes one local entry takes (the payload above, a KV record key), measured with
    tracemalloc over ``n`` entries, and what the tier counts per entry against ``max_bytes``."""
    store = NearStore(n, 1 << 40, threading.Lock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            key = f"benchnearkv:{{kv}}:k:user:{i:06}"
            raw = compact(orjson.dumps({**PAYLOAD, "id": i}))  # as a reply from Redis is
            store.finish(store.begin(key), raw, 1e12)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / n, store.stats.bytes / n


if __name__ == "__main__":
    import os
    import sys

    if "--delay" in sys.argv:
        from loadtests.harness import private_server

        with private_server() as url:
            for _ in range(int(os.environ.get("RUNS", "3"))):
                print(invalidation_delay(url))
            measured, counted = memory_per_entry()
            print(f"memory per entry: {measured:.0f} B measured, {counted:.0f} B counted")
        sys.exit(0)
    sys.exit(main([sys.modules[__name__]]))
