"""The runner's and the client layer's own cost.

* A GET through a flow vs ``client.get`` by hand (``run_sync`` / ``run_async``).
* A GET on the client ``connect()`` / ``connect_async()`` give (our pools, timeouts, retry
  policy, health checks) vs a plain ``redis.Redis`` / ``redis.asyncio.Redis`` from the same URL.
* Bursts: 100 and 1000 concurrent asyncio tasks, one GET each, on one ``connect_async()``
  client vs ``redis.asyncio`` on a ``BlockingConnectionPool`` of the same size (100): the time
  of a whole burst; throughput and the p99 of one task's latency are printed before the table.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns._core.ops import Command, Flow
from redispatterns._runner import run_async, run_sync
from redispatterns.client import connect, connect_async

KEY = "bench:core"
POOL = 100


def _get(key: str) -> Flow[Any]:
    return (yield Command("GET", key))


def _per_loop(make: Callable[[], Any]) -> Callable[[], Any]:
    """The client ``make()`` gives, one per event loop (the harness runs each case in its own)."""
    state: dict[str, Any] = {}

    def get() -> Any:
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:
            state["loop"], state["c"] = loop, make()
        return state["c"]

    return get


def _burst(get_client: Callable[[], Any], n: int) -> Callable[[], Awaitable[Any]]:
    async def burst() -> Any:
        c = get_client()
        return await asyncio.gather(*(c.get(KEY) for _ in range(n)))

    return burst


async def _latencies(client: Any, n: int, rounds: int) -> tuple[float, float]:
    """(calls per second, p99 µs of one task) over ``rounds`` bursts of ``n`` tasks."""
    lat: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        await client.get(KEY)
        lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(n)))  # warm: open the pool's connections
    lat.clear()
    start = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(n)))
    took = time.perf_counter() - start
    lat.sort()
    return n * rounds / took, lat[int(0.99 * (len(lat) - 1))] * 1e6


def _burst_summary(url: str) -> None:
    async def go() -> None:
        ours = connect_async(url)
        theirs = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=10)
        )
        for n, rounds in ((100, 60), (1000, 8)):
            rows: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
            for _ in range(3):  # interleaved, median of three
                rows["ours"].append(await _latencies(ours, n, rounds))
                rows["theirs"].append(await _latencies(theirs, n, rounds))
            for who, label in (("ours", "connect_async()"), ("theirs", "redis.asyncio blocking pool")):
                tput = statistics.median(r[0] for r in rows[who])
                p99 = statistics.median(r[1] for r in rows[who])
                print(f"  {n:5d} tasks, {label:28}: {tput:8.0f} GET/s, p99 {p99:8.0f} µs", flush=True)
        await theirs.aclose()

    print(f"bursts of concurrent asyncio tasks on one pooled client (pool of {POOL}):", flush=True)
    asyncio.run(go())


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    c.set(KEY, b"x" * 100)
    raw = redis.Redis.from_url(url)
    plain = _per_loop(lambda: redis.asyncio.Redis.from_url(url))
    plain2 = _per_loop(lambda: redis.asyncio.Redis.from_url(url))
    ours = _per_loop(lambda: connect_async(url))
    blocking = _per_loop(
        lambda: redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=10)
        )
    )

    async def afloor() -> Any:
        return await plain().get(KEY)

    async def acall() -> Any:
        return await run_async(plain2(), _get(KEY))

    async def aconnected() -> Any:
        return await ours().get(KEY)

    _burst_summary(url)
    return [
        BenchCase("core", "GET through run_sync", lambda: run_sync(raw, _get(KEY)), lambda: raw.get(KEY)),
        BenchCase("core", "GET through run_async", acall, afloor, is_async=True),
        BenchCase("core", "GET on the connect() client", lambda: c.get(KEY), lambda: raw.get(KEY),
                  note="floor: redis.Redis.from_url, same URL"),
        BenchCase("core", "GET on the connect_async() client", aconnected, afloor, is_async=True,
                  note="floor: redis.asyncio.Redis.from_url, same URL"),
        BenchCase("core", "100 tasks x GET, connect_async()", _burst(ours, 100), _burst(blocking, 100),
                  is_async=True, calls=400, note=f"floor: redis.asyncio, BlockingConnectionPool({POOL})"),
        BenchCase("core", "1000 tasks x GET, connect_async()", _burst(ours, 1000), _burst(blocking, 1000),
                  is_async=True, calls=60, note=f"floor: redis.asyncio, BlockingConnectionPool({POOL})"),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
