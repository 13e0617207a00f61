"""The standalone clients of ``connect()``: connections that pack with hiredis directly, and the
runners' direct path (a script or a reply-as-is command sent on the pool's connection, without
redis-py's per-command wrapper). Same bytes, same replies, same errors, audited all the same."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pytest
import redis
import redis.asyncio.connection
import redis.connection
import redis.exceptions
import redis.utils

from redispatterns import _compat
from redispatterns._core.ops import Command, Flow, Script
from redispatterns._core.scripts import load
from redispatterns._pools import DIRECT, AsyncQueuingPool, QueuingPool
from redispatterns._runner import run_async, run_sync
from redispatterns.client import _build
from redispatterns.testing.auditor import SlotAuditor
from redispatterns.testing.plugin import Backend


class _Colour(enum.IntEnum):
    RED = 1


class _Text(str):
    pass


_ARGS: list[tuple[Any, ...]] = [
    ("GET", "k"),
    ("SET", b"k", "v\u00e9", "PX", 1500),
    ("EVALSHA", b"abc", b"2", "{a}x", "{a}y", 0, -7, 1.5, 0.1, 1e20, 2**70, float("inf")),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),  # hiredis refuses it: redis-py's packer takes it
    ("SET", "k", _Colour.RED),  # an int subclass: redis-py's repr, as before
    ("SET", _Text("k"), "v"),
    ("CONFIG GET", "maxmemory"),  # a name with a space: split as redis-py splits it
    (b"GET", "k"),
]


def _packed(conn: Any, args: tuple[Any, ...]) -> Any:
    """The bytes ``conn`` packs ``args`` to, or the error it raises (type and message)."""
    try:
        return b"".join(bytes(p) for p in conn.pack_command(*args))
    except Exception as exc:
        return type(exc), str(exc)


_BAD: list[tuple[Any, ...]] = [
    ("SET", "k", True),
    ("SET", "k", None),
    ("SET", "k", object()),
    ("SET", "k", "\udc80"),
]


@pytest.mark.parametrize(
    ("pool_cls", "plain_cls"),
    [(QueuingPool, redis.connection.Connection), (AsyncQueuingPool, redis.asyncio.connection.Connection)],
)
def test_connections_pack_every_command_as_redis_py_does(pool_cls: Any, plain_cls: Any) -> None:
    """The same bytes, or the same error, as a plain redis-py connection of the same runtime."""
    ours = pool_cls.from_url("redis://127.0.0.1:1").make_connection()
    plain = plain_cls()
    for args in _ARGS + _BAD:
        assert _packed(ours, args) == _packed(plain, args), args
    for args in _BAD[:3]:
        assert _packed(ours, args)[0] is redis.exceptions.DataError


def test_the_sync_packer_is_direct_and_another_encoding_keeps_redis_pys() -> None:
    direct = QueuingPool.from_url("redis://127.0.0.1:1").make_connection()
    # redis-py uses hiredis (3.2 or later, our floor) for its parser and its packer
    assert redis.utils.HIREDIS_AVAILABLE
    assert type(direct._command_packer).__name__ == "_DirectPacker"
    for opts in ({"encoding": "latin-1"}, {"encoding_errors": "replace"}):
        other = QueuingPool.from_url("redis://127.0.0.1:1", **opts).make_connection()
        assert type(other._command_packer) is redis.connection.HiredisRespSerializer
        plain: Any = redis.connection.Connection(**opts)  # type: ignore[no-untyped-call]
        assert _packed(other, ("SET", "k", "\u00e9")) == _packed(plain, ("SET", "k", "\u00e9"))
    assert _compat.pack_directly(object()) is not None  # anything without a packer is left as it is


def _standalone(backend: Backend) -> str:
    if backend.is_fake or backend.is_cluster:
        pytest.skip("connect()'s standalone clients only")
    assert backend.url is not None
    return backend.url


def _spread() -> Flow[tuple[Any, Any, Any, Any]]:
    """A script, a command whose reply redis-py parses (SET: True), a callback-free one, and one
    whose keys span slots (the auditor must say so)."""
    a = yield Script(load("core_time"))
    b = yield Command("SET", "t:direct:k", "v")
    c = yield Command("GET", "t:direct:k")
    d = yield Command("MGET", "t:direct:a", "t:direct:k")
    return a, b, c, d


def test_the_runner_uses_the_pool_directly_and_the_auditor_sees_it(backend: Backend) -> None:
    url = _standalone(backend)
    client: Any = _build(url, {}, asyncio_=False)
    assert getattr(client, DIRECT) is client.connection_pool
    auditor = SlotAuditor()
    auditor.watch(client)
    calls: list[Any] = []
    wrapped = client.execute_command

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[0])
        return wrapped(*args, **kw)

    client.execute_command = spy
    try:
        run_sync(client, _spread())  # loads the script (SCRIPT LOAD, then EVALSHA again)
        calls.clear()
        auditor.violations.clear()
        us, set_reply, got, both = run_sync(client, _spread())
    finally:
        client.close()
    assert us > 1_600_000_000_000_000
    assert (set_reply, got, both) == (True, b"v", [None, b"v"])  # SET: redis-py's reply callback
    assert calls == ["SET"]  # the script, GET and MGET went straight to the connection
    assert len(auditor.violations) == 1 and "MGET" in auditor.violations[0]


def test_the_asyncio_runner_uses_the_pool_directly_and_the_auditor_sees_it(backend: Backend) -> None:
    url = _standalone(backend)

    async def go() -> tuple[Any, list[str]]:
        client: Any = _build(url, {}, asyncio_=True)
        auditor = SlotAuditor()
        auditor.watch(client)
        try:
            return await run_async(client, _spread()), auditor.violations
        finally:
            await client.aclose()

    (us, set_reply, got, both), violations = asyncio.run(go())
    assert us > 1_600_000_000_000_000
    assert (set_reply, got, both) == (True, b"v", [None, b"v"])
    assert len(violations) == 1 and "MGET" in violations[0]


def test_an_error_reply_keeps_the_connection_and_a_flushed_script_is_loaded_again(backend: Backend) -> None:
    url = _standalone(backend)
    client: Any = _build(url, {"max_connections": 1}, asyncio_=False)
    try:
        client.set("t:direct:s", "text")

        def wrong() -> Flow[Any]:
            try:
                yield Command("LPUSH", "t:direct:s", "x")
            except redis.exceptions.ResponseError as exc:
                return str(exc)
            return None

        assert "WRONGTYPE" in str(run_sync(client, wrong()))
        conn = client.connection_pool.get_connection()
        client.connection_pool.release(conn)
        client.script_flush()

        def timed() -> Flow[Any]:
            return (yield Script(load("core_time")))

        assert run_sync(client, timed()) > 1_600_000_000_000_000
        again = client.connection_pool.get_connection()
        client.connection_pool.release(again)
        assert again is conn and again._sock is not None  # one connection, never dropped
    finally:
        client.close()


def test_a_cancelled_direct_read_never_hands_its_reply_to_the_next_call(backend: Backend) -> None:
    """A task cancelled while it waits for a reply (the server paused) leaves no reply behind on a
    pooled connection: the next call on the one-connection pool reads its own."""
    url = _standalone(backend)
    admin = backend.sync_client()

    async def go() -> tuple[Any, Any]:
        client: Any = _build(url, {"max_connections": 1}, asyncio_=True)
        try:
            await client.set("t:direct:n", "7")

            def incr() -> Flow[Any]:
                return (yield Command("INCR", "t:direct:n"))

            def get() -> Flow[Any]:
                return (yield Command("GET", "t:direct:other"))

            admin.execute_command("CLIENT", "PAUSE", 400, "ALL")
            task = asyncio.ensure_future(run_async(client, incr()))
            await asyncio.sleep(0.1)  # sent, waiting for the paused server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.set("t:direct:other", "mine")
            return await run_async(client, get()), await client.get("t:direct:n")
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            await client.aclose()

    mine, n = asyncio.run(go())
    assert mine == b"mine"
    assert n in (b"7", b"8")  # the cancelled INCR may or may not have run once the pause ended
