"""Stampedes and outages: 1,000 concurrent callers of one cold key run the function once
(threads, asyncio tasks, 4 processes; calls counted in Redis); a server stopped mid-run leaves
results flowing, opens the breaker, and the cache recovers when the server is back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import redispatterns as rpm
from redispatterns.cache import CircuitBreaker, cached
from redispatterns.testing.plugin import Backend, ServerPool
from redispatterns.testing.servers import StandaloneServer

COUNT = "stampede:calls"
CALLERS = 1000


def _heavy(backend: Backend) -> None:
    """Heavy tests run on the standalone servers and one cluster (time budget)."""
    if backend.is_fake:
        pytest.skip("heavy concurrency: real servers only")
    if backend.is_cluster and not backend.name.startswith("cluster-redis"):
        pytest.skip("heavy concurrency: one cluster kind is enough")


@pytest.mark.slow
def test_1000_threads_one_cold_key_run_the_function_once(backend: Backend) -> None:
    _heavy(backend)
    client = backend.sync_client()
    counter = backend.sync_client()

    @cached(ttl=60, client=client)
    def report(day: str) -> dict[str, Any]:
        n = counter.incr(COUNT)
        time.sleep(0.3)
        return {"day": day, "n": n}

    start = threading.Barrier(CALLERS)
    results: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        start.wait()
        r = report("2026-11-22")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(counter.get(COUNT)) == 1
    assert len(results) == CALLERS
    assert all(r == {"day": "2026-11-22", "n": 1} for r in results)


@pytest.mark.slow
def test_1000_tasks_one_cold_key_run_the_function_once(backend: Backend) -> None:
    _heavy(backend)
    counter = backend.sync_client()

    async def main() -> list[Any]:
        client = backend.async_client()

        @cached(ttl=60, client=client)
        async def report(day: str) -> dict[str, Any]:
            n = counter.incr(COUNT)
            await asyncio.sleep(0.3)
            return {"day": day, "n": n}

        try:
            return list(await asyncio.gather(*(report("d") for _ in range(CALLERS))))
        finally:
            await client.aclose()

    results = asyncio.run(main())
    assert int(counter.get(COUNT)) == 1
    assert all(r == {"day": "d", "n": 1} for r in results)


@cached(ttl=60, name="tests.stampede.report")
def proc_report(day: str) -> dict[str, Any]:
    n = rpm.connect().incr(COUNT)
    time.sleep(0.5)
    return {"day": day, "n": int(n)}


def _proc_main(url: str, threads: int, barrier: Any, out: Any) -> None:
    rpm.configure(url)
    ready = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        ready.wait()
        r = proc_report("cold")
        with lock:
            results.append(r)

    barrier.wait()
    ts = [threading.Thread(target=call) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(results)


@pytest.mark.slow
def test_4_processes_1000_callers_run_the_function_once(backend: Backend) -> None:
    _heavy(backend)
    assert backend.url is not None
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [ctx.Process(target=_proc_main, args=(backend.url, CALLERS // 4, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    counter = backend.sync_client()
    assert int(counter.get(COUNT)) == 1
    flat = [r for rs in results for r in rs]
    assert len(flat) == CALLERS
    assert all(r == {"day": "cold", "n": 1} for r in flat)


def test_same_arguments_same_key_in_another_process() -> None:
    code = (
        "from tests.integration.test_cache_stampede import proc_report as f;"
        "import uuid, datetime as dt;"
        "print(f.key('x'));"
        "print(proc_key_args(f))"
    )
    here = proc_key_args(proc_report)
    env = dict(os.environ, PYTHONHASHSEED="123")
    setup = "from tests.integration.test_cache_stampede import proc_key_args\n"
    out = subprocess.run(
        [sys.executable, "-c", setup + code.replace(";", "\n")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert out.returncode == 0, out.stderr
    key, other = out.stdout.split("\n")[:2]
    assert key == proc_report.key("x")
    assert other == here


def proc_key_args(f: Any) -> str:
    """Keys of awkward arguments: must not depend on the process (hash seeds, ids, order)."""
    import datetime as dt
    import uuid
    from dataclasses import dataclass

    @dataclass
    class P:
        a: int
        b: str

    return "|".join(
        [
            f.key({"b": 1, "a": {2, 3}}),
            f.key(uuid.UUID(int=7)),
            f.key(dt.datetime(2026, 1, 2, 3, 4, 5)),
            f.key(P(1, "x")),
            f.key(frozenset({"z", "y"})),
            f.key("é" * 200),  # long: hashed
        ]
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_server_stopped_mid_run_fails_open_and_recovers(server_pool: ServerPool, flavour: str) -> None:
    kind = next(iter(server_pool.kinds.values()))
    server = StandaloneServer(kind)
    events: list[str] = []
    breaker = CircuitBreaker(threshold=3, reset_after=0.5)
    try:
        if flavour == "sync":
            client = rpm.connect(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)

            @cached(ttl=60, client=client, breaker=breaker, on_event=lambda e, k: events.append(e))
            def f(x: int) -> int:
                return x * 10

            def call(x: int) -> Any:
                return f(x)

            run = call
        else:
            loop = asyncio.new_event_loop()

            async def make() -> Any:
                c = rpm.connect_async(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)

                @cached(ttl=60, client=c, breaker=breaker, on_event=lambda e, k: events.append(e))
                async def g(x: int) -> int:
                    return x * 10

                return g

            g = loop.run_until_complete(make())
            f = g

            def run(x: int) -> Any:
                return loop.run_until_complete(g(x))

        assert run(1) == 10 and run(1) == 10
        assert f.stats.hits == 1
        server.node.stop()  # the server goes away mid-run
        results = [run(i) for i in range(2, 22)]
        assert results == [i * 10 for i in range(2, 22)]  # every caller still gets its result
        stats = f.stats
        assert stats.errors == 3  # the breaker's threshold...
        assert stats.bypassed == 17  # ...then Redis is skipped entirely
        assert stats.breaker_state == "open"
        assert "breaker_open" in events
        server.restart()
        time.sleep(0.6)  # the breaker's reset_after
        assert run(5) == 50  # the half-open probe reaches Redis and succeeds
        assert breaker.state == "closed"
        assert run(5) == 50
        assert events[-1] == "hit"
        if flavour == "async":
            loop.close()
    finally:
        server.stop()
