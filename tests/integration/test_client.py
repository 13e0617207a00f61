"""The client facade on every backend and flavour, cluster included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import redispatterns as rp
from redispatterns._core.clock import server_time_us
from redispatterns._core.ops import Batch, Command, Flow, Script
from redispatterns._core.scripts import load
from redispatterns._runner import run_async
from redispatterns.testing.plugin import Backend, Harness


def test_flow_runs_commands_scripts_and_batches(rp: Harness) -> None:
    def flow() -> Flow[tuple[Any, Any, Any]]:
        yield Command("SET", "t:{a}:1", "x")
        got = yield Command("GET", "t:{a}:1")
        us = yield Script(load("core_time"))
        replies = yield Batch(
            (Command("INCR", "t:{a}:n"), Command("INCR", "t:{a}:n"), Command("GET", "t:{a}:n")),
            transaction=True,
        )
        return got, us, replies

    got, us, replies = rp.run(flow())
    assert got == b"x"
    assert us > 1_600_000_000_000_000
    assert replies == [1, 2, b"2"]


def test_script_survives_script_flush(rp: Harness, backend: Backend) -> None:
    first = rp.run(server_time_us())
    c = backend.sync_client()
    c.script_flush()
    assert rp.run(server_time_us()) >= first


def test_errors_are_thrown_into_the_flow(rp: Harness) -> None:
    def flow() -> Flow[tuple[str, bool] | None]:
        yield Command("SET", "t:s", "notalist")
        try:
            yield Command("LPUSH", "t:s", "x")
        except Exception as exc:  # redis ResponseError, WRONGTYPE
            return type(exc).__name__, "WRONGTYPE" in str(exc)
        return None

    assert rp.run(flow()) == ("ResponseError", True)


def test_server_info_detects_kind(rp: Harness, backend: Backend) -> None:
    info = rp.call(rp.pick(rp_server_info, rp_server_info_async)(rp.client))
    if backend.is_fake:
        assert info.kind == "fakeredis"
    else:
        assert backend.kind is not None
        assert info.kind == backend.kind.name.split("-")[0]
        assert info.version_text == backend.kind.version
        assert info.has("sharded_pubsub")
    assert info.mode == ("cluster" if backend.is_cluster else "standalone")


rp_server_info = rp.server_info
rp_server_info_async = rp.server_info_async


def test_connect_shares_one_client_per_url(backend: Backend) -> None:
    if backend.is_fake:
        pytest.skip("fakeredis has no URL")
    assert backend.url is not None
    a = rp.connect(backend.url)
    b = rp.connect(backend.url)
    assert a is b
    assert a.ping() is True
    c = rp.connect(backend.url, socket_timeout=1.0)
    assert c is not a
    anyc: Any = a
    kwargs = (
        anyc.get_default_node().redis_connection.connection_pool.connection_kwargs
        if backend.is_cluster
        else anyc.connection_pool.connection_kwargs
    )
    assert kwargs["socket_timeout"] == 5.0
    assert kwargs["socket_connect_timeout"] == 2.0
    if not backend.is_cluster:  # RedisCluster drops health checks from node connections
        assert kwargs["health_check_interval"] == 15
    assert kwargs["retry"].get_retries() == 0


async def test_connect_async_per_loop(backend: Backend) -> None:
    if backend.is_fake:
        pytest.skip("fakeredis has no URL")
    assert backend.url is not None
    a = rp.connect_async(backend.url)
    assert a is rp.connect_async(backend.url)
    assert await a.ping() is True
    await a.aclose()


def test_running_scripts_does_not_keep_clients_alive(backend: Backend) -> None:
    import gc
    import weakref

    from redispatterns._runner import run_sync

    if backend.is_fake:
        pytest.skip("fakeredis's server object keeps its clients")
    c = backend.sync_client()
    run_sync(c, server_time_us())
    ref = weakref.ref(c)
    backend._sync.remove(c)
    c.close()
    del c
    gc.collect()
    assert ref() is None


def test_connect_keeps_a_bounded_number_of_clients(backend: Backend) -> None:
    """Many option sets do not pile up clients: the oldest are forgotten, and still work."""
    if backend.is_fake:
        pytest.skip("connect() builds real clients")
    from redispatterns import client as client_module

    assert backend.url is not None
    first = rp.connect(backend.url, socket_timeout=3.0001)
    for i in range(3 * client_module._MAX_CLIENTS):
        rp.connect(backend.url, socket_timeout=3.0 + i / 1000)
    assert len(client_module._sync) <= client_module._MAX_CLIENTS
    assert first.ping() is True  # a forgotten client its holder still uses keeps working
    first.close()


def test_a_burst_on_a_small_asyncio_cluster_pool_queues_instead_of_failing(backend: Backend) -> None:
    """redis-py's asyncio cluster nodes raise MaxConnectionsError when their pool is full; the
    runner waits for a free connection as a blocking pool would, writes included (nothing was
    sent), so a burst loses and repeats nothing."""
    if not backend.is_cluster:
        pytest.skip("the sync clients and standalone asyncio pools of connect() already block")

    def incr() -> Flow[Any]:
        return (yield Command("INCR", "t:{burst}:n"))

    async def burst() -> list[Any]:
        client = backend.async_client(max_connections=2)
        try:
            return await asyncio.gather(*(run_async(client, incr()) for _ in range(300)))
        finally:
            await client.aclose()

    replies = asyncio.run(burst())
    assert sorted(replies) == list(range(1, 301))  # every write once, none refused


# --------------------------------------------------------------------------- pools and lifecycle


def _url(backend: Backend) -> str:
    if backend.is_fake or backend.url is None:
        pytest.skip("connect() builds real clients from a URL")
    return backend.url


def _connected(client: Any) -> int:
    """How many of ``client``'s pooled connections are open."""
    from redispatterns import _loops

    return sum(1 for c in _loops._connections(client) if c.is_connected)


def test_a_burst_on_a_small_pool_waits_for_a_free_connection(backend: Backend) -> None:
    """connect()'s pools queue a burst (writes included) instead of raising MaxConnectionsError,
    sync threads and asyncio tasks alike, and never open more than max_connections."""
    import threading

    url = _url(backend)
    if backend.is_cluster:
        pytest.skip("cluster node pools: see the asyncio cluster burst test")
    sync: Any = rp.connect(url, max_connections=2)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                sync.incr("t:burst:sync")
        except BaseException as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert int(sync.get("t:burst:sync")) == 400
    assert _connected(sync) <= 2

    async def burst() -> list[Any]:
        client = rp.connect_async(url, max_connections=2)
        replies = await asyncio.gather(*(client.incr("t:burst:async") for _ in range(300)))
        assert _connected(client) <= 2
        return replies

    assert sorted(asyncio.run(burst())) == list(range(1, 301))


def test_a_pool_full_for_its_whole_wait_raises_a_connection_error(backend: Backend) -> None:
    import redis.exceptions

    url = _url(backend)
    if backend.is_cluster:
        pytest.skip("standalone pools")

    async def go() -> None:
        client: Any = rp.connect_async(url, max_connections=1, timeout=0.2)
        held = await client.connection_pool.get_connection()
        try:
            with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
                await client.ping()
        finally:
            await client.connection_pool.release(held)
        assert await client.ping() is True  # the released connection serves the next caller

    asyncio.run(go())
    sync: Any = rp.connect(url, max_connections=1, timeout=0.2)
    held = sync.connection_pool.get_connection()
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            sync.ping()
    finally:
        sync.connection_pool.release(held)
    assert sync.ping() is True


def test_asyncio_clients_work_in_any_number_of_loops(backend: Backend) -> None:
    """asyncio.run twice, and two loops at once in two threads (two TestClients): the library's
    own clients are per loop, and each loop's clients are closed when that loop shuts down."""
    import threading

    url = _url(backend)
    seen: list[Any] = []

    async def use(name: str) -> int:
        client = rp.connect_async(url)
        seen.append(client)
        lock = rp.AsyncLock(name, ttl=5, client=client)
        async with lock as held:
            return held.fence

    assert asyncio.run(use("loops:a")) == 1
    assert asyncio.run(use("loops:a")) == 2
    assert seen[0] is not seen[1]
    assert _connected(seen[0]) == 0  # closed when its loop shut down

    rp.configure(url)
    try:
        fences: list[int] = []

        def in_thread() -> None:
            async def go() -> None:
                for _ in range(20):
                    async with rp.AsyncLock("loops:b", ttl=5) as held:
                        fences.append(held.fence)

            asyncio.run(go())

        threads = [threading.Thread(target=in_thread) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(fences) == list(range(1, 41))
    finally:
        rp.configure()


def test_a_client_from_another_loop_gets_a_clear_error(backend: Backend) -> None:
    """One client created outside both loops: fine in the first; in the second, while it still
    holds the first loop's connections, a RuntimeError naming the fix (not "attached to a
    different loop"); once closed in its loop, it moves on to the next."""
    url = _url(backend)
    from redispatterns.client import _build

    client = _build(url, {}, asyncio_=True)

    async def take(name: str) -> int:
        async with rp.AsyncLock(name, ttl=5, client=client) as held:
            return held.fence

    assert asyncio.run(take("other-loop")) == 1
    with pytest.raises(RuntimeError, match=r"another event loop, which has been closed.*aclose"):
        asyncio.run(take("other-loop"))

    async def take_and_close() -> int:
        try:
            return await take("other-loop")
        finally:
            await client.aclose()

    fresh = _build(url, {}, asyncio_=True)
    client = fresh
    assert asyncio.run(take_and_close()) == 2
    assert asyncio.run(take_and_close()) == 3  # closed in its loop: usable in the next one


def test_a_client_used_by_another_running_loop_is_refused(backend: Backend) -> None:
    import threading

    url = _url(backend)
    from redispatterns.client import _build

    client = _build(url, {}, asyncio_=True)
    first_in = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        async with rp.AsyncLock("running-loop", ttl=5, client=client):
            first_in.set()
            await asyncio.to_thread(release.wait, 30)
        await client.aclose()

    t = threading.Thread(target=asyncio.run, args=(hold(),))
    t.start()
    try:
        assert first_in.wait(10)

        async def second() -> None:
            await rp.AsyncLock("running-loop-2", ttl=5, client=client).acquire()

        with pytest.raises(RuntimeError, match="another running loop"):
            asyncio.run(second())
    finally:
        release.set()
        t.join()


def test_close_and_aclose_close_every_client_the_library_made(backend: Backend) -> None:
    url = _url(backend)
    sync = rp.connect(url, socket_timeout=4.5)
    assert sync.ping() is True
    assert _connected(sync) >= 1

    async def go() -> None:
        a = rp.connect_async(url, socket_timeout=4.5)
        assert await a.ping() is True
        assert _connected(a) >= 1
        await rp.aclose()
        assert _connected(a) == 0
        assert rp.connect_async(url, socket_timeout=4.5) is not a  # a new one after aclose()

    asyncio.run(go())
    assert _connected(sync) == 0
    assert rp.connect(url, socket_timeout=4.5) is not sync
    again = rp.connect(url, socket_timeout=4.5)
    assert again.ping() is True
    rp.close()
    assert _connected(again) == 0


def test_the_client_cache_closes_what_it_evicts(backend: Backend) -> None:
    url = _url(backend)
    from redispatterns import client as client_module

    first = rp.connect(url, socket_timeout=3.5001)
    assert first.ping() is True
    for i in range(client_module._MAX_CLIENTS + 1):
        rp.connect(url, socket_timeout=3.6 + i / 1000)
    if not backend.is_cluster:  # a closed sync Cluster client cannot reconnect: only forgotten
        assert _connected(first) == 0  # evicted and closed
    assert first.ping() is True  # a holder that still uses it reconnects
    first.close()


def test_a_waiter_that_leaves_passes_its_turn_on(backend: Backend) -> None:
    """asyncio pool of one: a queued caller cancelled (or timed out) after its wake-up does not
    strand the others, and callers are served in arrival order."""
    url = _url(backend)
    if backend.is_cluster:
        pytest.skip("standalone pools")

    async def go() -> list[str]:
        client: Any = rp.connect_async(url, max_connections=1, timeout=5)
        pool = client.connection_pool
        held = await pool.get_connection()
        order: list[str] = []

        async def call(name: str) -> None:
            await client.ping()
            order.append(name)

        first = asyncio.create_task(call("first"))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(call(n)) for n in ("second", "third")]
        await asyncio.sleep(0.01)
        # what release() does, without yielding in between: the slot frees and "first" is woken...
        pool._in_use_connections.remove(held)
        pool._available_connections.append(held)
        pool._wake_next()
        first.cancel()  # ...and leaves before it runs: its turn goes to "second"
        await asyncio.wait_for(asyncio.gather(*rest), 5)
        assert first.cancelled()
        assert pool._woken == 0 and not pool._waiters
        return order

    assert asyncio.run(go()) == ["second", "third"]
