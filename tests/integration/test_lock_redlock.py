"""Redlock on 5 independent local servers: quorum, fail-fast cleanup, a slowed node, extension."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redispatterns.errors import LockNotOwned, LockTimeout
from redispatterns.lock import AsyncRedlock, Redlock
from redispatterns.testing.plugin import ServerPool
from redispatterns.testing.servers import StandaloneServer

pytestmark = pytest.mark.slow
KEY = "rp:redlock:{job}"


@pytest.fixture(scope="module")
def masters(server_pool: ServerPool) -> Iterator[list[StandaloneServer]]:
    kind = next(iter(server_pool.kinds.values()))
    servers: list[StandaloneServer] = []
    try:
        for _ in range(5):
            servers.append(StandaloneServer(kind))
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def nodes(masters: list[StandaloneServer]) -> Iterator[list[StandaloneServer]]:
    for s in masters:
        with redis.Redis(host="127.0.0.1", port=s.port) as c:
            c.flushall()
    yield masters
    for s in masters:  # bring every node back for the next test
        if s.node.proc.poll() is None:
            s.node.resume()
        else:
            s.restart()


def _keys_left(servers: list[StandaloneServer]) -> list[int]:
    out = []
    for s in servers:
        if s.node.proc.poll() is None:
            with redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=2) as c:
                out.append(int(c.exists(KEY)))
    return out


def _down(servers: list[StandaloneServer], n: int) -> None:
    for s in servers[:n]:
        s.node.stop()


def _run(flavour: str, servers: list[StandaloneServer], body: Callable[[Any], Any], **kw: Any) -> Any:
    """Run ``body(redlock)`` with a sync or asyncio Redlock over ``servers``."""
    # no client-side retries: a down master must cost one refused connection, not a backoff
    opts: dict[str, Any] = {
        "socket_timeout": 1.0,
        "socket_connect_timeout": 0.3,
        "retry": Retry(NoBackoff(), 0),
    }
    kw.setdefault("node_timeout", 0.5)  # generous: this machine is shared and busy
    if flavour == "sync":
        clients = [redis.Redis(host="127.0.0.1", port=s.port, **opts) for s in servers]
        lock = Redlock("job", clients, **kw)
        try:
            return body(lock)
        finally:
            lock.close()
            for c in clients:
                c.close()

    async def main() -> Any:
        aopts = {**opts, "retry": AsyncRetry(NoBackoff(), 0)}
        aclients = [redis.asyncio.Redis(host="127.0.0.1", port=s.port, **aopts) for s in servers]
        alock = AsyncRedlock("job", aclients, **kw)
        try:
            return await body(alock)
        finally:
            await alock.close()
            for c in aclients:
                await c.aclose()

    return asyncio.run(main())


async def _await(x: Any) -> Any:
    return await x


def _body(flavour: str, steps: Callable[[Any, Callable[[Any], Any]], Any]) -> Callable[[Any], Any]:
    """One test body for both flavours: ``steps(lock, do)``, where ``do(x)`` resolves a call.

    For asyncio the steps run in a worker thread and ``do`` runs each coroutine on the loop.
    """
    if flavour == "sync":
        return lambda lock: steps(lock, lambda x: x)

    async def body(lock: Any) -> Any:
        loop = asyncio.get_running_loop()

        def do(x: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(_await(x), loop).result()

        return await loop.run_in_executor(None, steps, lock, do)

    return body


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_all_up_acquires_everywhere_and_releases_everywhere(
    nodes: list[StandaloneServer], flavour: str
) -> None:
    def steps(lock: Any, do: Callable[[Any], Any]) -> tuple[int, int, list[int], list[int]]:
        held = do(lock.acquire())
        during = _keys_left(nodes)
        do(held.extend())
        do(held.release())
        return held.votes, held.validity_ms, during, _keys_left(nodes)

    votes, validity, during, after = _run(flavour, nodes, _body(flavour, steps), ttl=2.0)
    assert votes == 5 and 0 < validity <= 2000 - 22
    assert during == [1] * 5 and after == [0] * 5


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_two_down_still_acquires(nodes: list[StandaloneServer], flavour: str) -> None:
    _down(nodes, 2)

    def steps(lock: Any, do: Callable[[Any], Any]) -> tuple[int, float]:
        held = do(lock.acquire())
        held.ensure_held()
        left = held.valid_for()
        do(held.release())
        return held.votes, left

    votes, left = _run(flavour, nodes, _body(flavour, steps), ttl=2.0)
    assert votes == 3 and 0 < left < 2.0
    assert _keys_left(nodes) == [0, 0, 0]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_three_down_fails_fast_and_leaves_no_keys(nodes: list[StandaloneServer], flavour: str) -> None:
    _down(nodes, 3)

    def steps(lock: Any, do: Callable[[Any], Any]) -> str:
        with pytest.raises(LockTimeout, match="2 of 5 masters agreed") as info:
            do(lock.acquire())
        return str(info.value)

    t0 = time.monotonic()
    _run(flavour, nodes, _body(flavour, steps), ttl=2.0, retries=1, retry_delay=0.05)
    assert time.monotonic() - t0 < 1.5
    assert _keys_left(nodes) == [0, 0]  # the two votes it got were handed back


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_slowed_node_shrinks_the_validity(nodes: list[StandaloneServer], flavour: str) -> None:
    nodes[0].node.pause()  # SIGSTOP: the node answers nothing until resumed
    try:

        def steps(lock: Any, do: Callable[[Any], Any]) -> tuple[int, int]:
            held = do(lock.acquire())
            out = (held.votes, held.validity_ms)
            do(held.release())
            return out

        votes, validity = _run(flavour, nodes, _body(flavour, steps), ttl=2.0, node_timeout=0.3)
    finally:
        nodes[0].node.resume()
    assert 3 <= votes <= 4  # the paused node never votes (a busy machine may slow another)
    assert validity <= 2000 - 300 - 22  # the time spent waiting on the slow node is not safe time


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_extend_needs_a_majority(nodes: list[StandaloneServer], flavour: str) -> None:
    def steps(lock: Any, do: Callable[[Any], Any]) -> str:
        held = do(lock.acquire())
        _down(nodes, 3)
        with pytest.raises(LockNotOwned, match="2 of 5 masters extended") as info:
            do(held.extend())
        return str(info.value)

    _run(flavour, nodes, _body(flavour, steps), ttl=2.0)


def test_a_second_client_cannot_take_a_held_redlock(nodes: list[StandaloneServer]) -> None:
    def steps(lock: Any, do: Callable[[Any], Any]) -> None:
        held = lock.acquire()
        rival = Redlock("job", lock.clients, ttl=2.0, retries=0)
        try:
            with pytest.raises(LockTimeout, match="0 of 5"):
                rival.acquire()
        finally:
            rival.close()
        assert _keys_left(nodes) == [1] * 5  # the rival's failed round did not delete our keys
        held.release()
        with lock as again:
            assert again.votes == 5
        assert _keys_left(nodes) == [0] * 5

    _run("sync", nodes, _body("sync", steps), ttl=2.0)


def test_validation(nodes: list[StandaloneServer]) -> None:
    c = redis.Redis(host="127.0.0.1", port=nodes[0].port)
    with pytest.raises(ValueError, match="at least one"):
        Redlock("x", [])
    with pytest.raises(TypeError, match="not URLs"):
        Redlock("x", ["redis://localhost"])
    with pytest.raises(ValueError, match="much smaller"):
        Redlock("x", [c], ttl=0.1, node_timeout=0.1)
    with pytest.raises(ValueError, match="retries"):
        Redlock("x", [c], retries=-1)
    lock = Redlock("x", [c])
    assert "nodes=1" in repr(lock)
    lock.close()
    c.close()
