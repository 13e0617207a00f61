"""``connect_async()`` clients keep their socket timeout with a watchdog thread instead of loop
timers (``redispatterns._deadlines``): a hung server still costs one timeout, a cancellation from
elsewhere is still a cancellation, and a read in progress arms no timer in the event loop."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import TimeoutError as RedisTimeoutError

from redispatterns import _deadlines
from redispatterns.client import _build
from redispatterns.testing.servers import ServerKind

from .conftest import FaultServers, paused

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 keeps redis-py's own timers")

TIMEOUT = 0.3


def _client(url: str, **extra: Any) -> Any:
    return _build(url, {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT, **extra}, asyncio_=True)


def test_plain_tcp_urls_get_watched_connections(fault_servers: FaultServers, server_kind: ServerKind) -> None:
    server = fault_servers.standalone(server_kind)

    async def main() -> None:
        c = _client(server.url)
        short = _client(server.url, socket_timeout=_deadlines.MIN_WATCHED / 2)
        try:
            assert c.connection_pool.connection_class is _deadlines.WatchedConnection
            await c.ping()
            await short.ping()
            (conn,) = c.connection_pool._available_connections
            assert (conn.io_timeout, conn.socket_timeout) == (TIMEOUT, None)
            (kept,) = short.connection_pool._available_connections  # too short to watch: redis-py's timer
            assert (kept.io_timeout, kept.socket_timeout) == (None, _deadlines.MIN_WATCHED / 2)
        finally:
            await c.aclose()
            await short.aclose()

    asyncio.run(main())


def test_a_hung_server_costs_one_timeout_and_arms_no_loop_timer(
    fault_servers: FaultServers, server_kind: ServerKind
) -> None:
    server = fault_servers.standalone(server_kind)

    async def main() -> None:
        c = _client(server.url)
        loop = asyncio.get_running_loop()
        try:
            await c.set("k", "v")
            with paused(server.node):
                read = asyncio.ensure_future(c.get("k"))
                await asyncio.sleep(TIMEOUT / 3)
                assert not read.done()
                # asyncio's own list of timers: redis-py would have one here for the read
                assert [h for h in loop._scheduled if not h.cancelled()] == []  # type: ignore[attr-defined]
                started = time.monotonic() - TIMEOUT / 3
                with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
                    await read
                took = time.monotonic() - started
                assert TIMEOUT <= took < TIMEOUT + 4 * _deadlines.TICK + 0.2, took
            assert await c.get("k") == b"v"  # the timed-out connection was dropped, the next is fine
            assert not _deadlines._ops
        finally:
            await c.aclose()

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation(
    fault_servers: FaultServers, server_kind: ServerKind
) -> None:
    server = fault_servers.standalone(server_kind)

    async def main() -> None:
        c = _client(server.url)
        try:
            await c.ping()
            with paused(server.node):
                read = asyncio.ensure_future(c.get("k"))
                await asyncio.sleep(TIMEOUT / 3)
                read.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await read
                assert not _deadlines._ops  # nothing left for the watchdog to fire at
                # the watchdog still times out the next read on the same client
                read = asyncio.ensure_future(c.get("k"))
                await asyncio.sleep(TIMEOUT + 3 * _deadlines.TICK)
                assert read.done()
                assert isinstance(read.exception(), RedisTimeoutError)
            assert await c.ping() is True
        finally:
            await c.aclose()

    asyncio.run(main())


def test_a_user_timeout_shorter_than_the_socket_timeout_wins(
    fault_servers: FaultServers, server_kind: ServerKind
) -> None:
    server = fault_servers.standalone(server_kind)

    async def main() -> None:
        c = _client(server.url, socket_timeout=5.0)
        try:
            await c.ping()
            with paused(server.node):
                started = time.monotonic()
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(c.get("k"), TIMEOUT)
                assert time.monotonic() - started < 5.0 / 2
                assert not _deadlines._ops
        finally:
            await c.aclose()

    asyncio.run(main())


def test_other_connection_kinds_are_left_alone() -> None:
    assert _build("unix:///tmp/none.sock", {}, asyncio_=True).connection_pool.connection_class is (
        redis.asyncio.UnixDomainSocketConnection
    )
    c = redis.asyncio.Redis()
    assert c.connection_pool.connection_class is redis.asyncio.Connection


def test_cluster_nodes_get_watched_connections(fault_servers: FaultServers, server_kind: ServerKind) -> None:
    cluster = fault_servers.cluster(server_kind)

    async def main() -> None:
        c = _client(cluster.url)
        try:
            for i in range(30):  # keys on every master: a connection to each
                await c.set(f"k{i}", i)
            conns = [conn for node in c.get_nodes() for conn in node._connections]
            assert len({conn.port for conn in conns}) >= 3
            assert {type(conn) for conn in conns} == {_deadlines.WatchedConnection}
            assert {conn.io_timeout for conn in conns} == {TIMEOUT}
        finally:
            await c.aclose()

    asyncio.run(main())
