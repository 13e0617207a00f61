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
