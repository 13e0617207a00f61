"""Issue 15.4: an outage leaves every pattern as ``rp.ServerUnavailable``, which is also a
``redis.exceptions.ConnectionError``, with the redis-py error as its cause and no password in
its message; on a server that is down (refused), hung (SIGSTOP) and, for fakeredis, disconnected.

What must hold, per pattern family (cache writes, Lock, a limiter with ``on_error="raise"``,
SessionStore, KV, Stream, Leaderboard, publish), sync and asyncio, standalone and cluster:
  * the error is a ``ServerUnavailable`` and a ``redis.exceptions.ConnectionError``;
  * ``__cause__`` is the redis-py error; the message names the server without a password;
  * a hung server costs the caller a bounded wait (a few socket timeouts, never the 5 s default);
  * a cached function fails open: it returns the computed value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

import redispatterns as rp
from redispatterns.client import _build
from redispatterns.testing.servers import ServerKind, free_port

from .conftest import OPTS, TIMEOUT, FaultServers, paused

PASSWORD = "s3cret-pw"


def _families(client: Any, is_async: bool) -> dict[str, Callable[[], Any]]:
    """One call per pattern family that must reach Redis (a coroutine function when async)."""
    mount = rp.Mount(prefix="faults:")
    if is_async:
        fn = rp.cached(client=client, ttl=60)(_async_double)
        lock = rp.AsyncLock("faults-lock", client=client)
        limiter = rp.AsyncSlidingWindowLimiter(5, 60, client=client, on_error="raise")
        sessions = rp.AsyncSessionStore(client)
        kv = rp.AsyncKV(client, {"m": mount})
        stream = rp.AsyncStream("faults-stream", client=client)
        board = rp.AsyncLeaderboard("faults-board", client=client)
        return {
            "cache.invalidate": lambda: fn.invalidate(1),
            "lock": lambda: lock.acquire(timeout=1),
            "limiter": lambda: limiter.hit("x"),
            "session": lambda: sessions.create("u1", {"a": 1}),
            "kv": lambda: kv.set("m", "k", 1),
            "stream": lambda: stream.add({"a": "1"}),
            "leaderboard": lambda: board.submit("m", 1),
            "publish": lambda: rp.publish_async("faults-ch", "m", client=client),
        }
    sfn = rp.cached(client=client, ttl=60)(_double)
    slock = rp.Lock("faults-lock", client=client)
    slimiter = rp.SlidingWindowLimiter(5, 60, client=client, on_error="raise")
    ssessions = rp.SessionStore(client)
    skv = rp.KV(client, {"m": mount})
    sstream = rp.Stream("faults-stream", client=client)
    sboard = rp.Leaderboard("faults-board", client=client)
    return {
        "cache.invalidate": lambda: sfn.invalidate(1),
        "lock": lambda: slock.acquire(timeout=1),
        "limiter": lambda: slimiter.hit("x"),
        "session": lambda: ssessions.create("u1", {"a": 1}),
        "kv": lambda: skv.set("m", "k", 1),
        "stream": lambda: sstream.add({"a": "1"}),
        "leaderboard": lambda: sboard.submit("m", 1),
        "publish": lambda: rp.publish("faults-ch", "m", client=client),
    }


def _double(x: int) -> int:
    return 2 * x


async def _async_double(x: int) -> int:
    return 2 * x


class Runner:
    """Runs a zero-argument call in the flavour (in one private event loop for asyncio)."""

    def __init__(self, is_async: bool) -> None:
        self.loop = asyncio.new_event_loop() if is_async else None

    def __call__(self, call: Callable[[], Any]) -> Any:
        if self.loop is None:
            return call()

        async def go() -> Any:
            out = call()
            return await out if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future) else out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
    r = Runner(request.param == "async")
    yield r
    r.close()


def _check_all(run: Runner, client: Any, bound: float, secret: str | None = None) -> dict[str, float]:
    """Every family raises ServerUnavailable within ``bound`` seconds; the time each took."""
    families = run(lambda: _families(client, run.loop is not None))
    took: dict[str, float] = {}
    wrong: list[str] = []
    for name, call in families.items():
        started = time.monotonic()
        try:
            run(call)
        except Exception as exc:
            took[name] = time.monotonic() - started
            if not (isinstance(exc, rp.ServerUnavailable) and isinstance(exc, RedisConnectionError)):
                wrong.append(f"{name}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            elif not isinstance(exc.__cause__, (RedisError, RedisClusterException)):
                wrong.append(f"{name}: cause is {exc.__cause__!r}")
            elif secret and secret in f"{exc} {exc.url} {exc!r}":
                wrong.append(f"{name}: the password is in the message: {exc}")
        else:
            wrong.append(f"{name}: returned instead of raising")
    assert not wrong, "\n".join(wrong)
    slow = {k: round(v, 2) for k, v in took.items() if v > bound}
    assert not slow, f"calls waited past {bound:.2f} s: {slow}"
    # a cached function fails open: the value is computed, the outage is not the caller's problem
    fn: Any = rp.cached(client=client, ttl=60)(_async_double if run.loop is not None else _double)
    assert run(lambda: fn(21)) == 42
    return took


def _client(run: Runner, url: str, **extra: Any) -> Any:
    if run.loop is None:
        return _build(url, {**OPTS, **extra}, asyncio_=False)

    async def make() -> Any:
        return _build(url, {**OPTS, **extra}, asyncio_=True)

    return run(make)


def _close(run: Runner, client: Any) -> None:
    if run.loop is None:
        client.close()
    else:
        run(client.aclose)


def test_fakeredis_disconnected(run: Runner) -> None:
    import fakeredis

    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server) if run.loop else fakeredis.FakeRedis(server=server)
    server.connected = False
    _check_all(run, client, bound=1.0)


def test_standalone_refused(run: Runner) -> None:
    """Nothing listens on the port: every call fails at once (connect refused), password masked."""
    client = _client(run, f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")
    try:
        _check_all(run, client, bound=1.0, secret=PASSWORD)
    finally:
        _close(run, client)


def test_standalone_hung(run: Runner, server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """SIGSTOP: connections open, nothing answers. A call costs about one socket timeout (a
    timeout is never retried): each family answers within 2 x timeout (+ slack for a loaded machine)."""
    server = fault_servers.standalone(server_kind)
    client = _client(run, server.url)
    try:
        run(lambda: client.ping())  # a pooled connection exists before the hang
        with paused(server.node):
            _check_all(run, client, bound=2 * TIMEOUT + 0.3)
        assert run(lambda: client.ping()) is True  # the same client works once resumed
    finally:
        _close(run, client)


def test_cluster_down(run: Runner, server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """Every node killed -9 under a client that knew the cluster: refused, then 'no reachable node'."""
    cluster = fault_servers.cluster(server_kind)
    client = _client(run, cluster.url)
    try:
        run(lambda: client.ping())
        cluster.kill()
        try:
            _check_all(run, client, bound=3.0)
        finally:
            cluster.restart()
    finally:
        _close(run, client)


def test_cluster_hung(run: Runner, server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """Every node SIGSTOPped. redis-py's cluster client re-reads the topology from each startup
    node after repeated timeouts, so one call in a few costs (nodes + 1) timeouts: bounded, still."""
    cluster = fault_servers.cluster(server_kind)
    client = _client(run, cluster.url)
    try:
        run(lambda: client.ping())
        with paused(*cluster.nodes):
            _check_all(run, client, bound=(len(cluster.nodes) + 2) * TIMEOUT + 0.5)
        run(lambda: client.ping())
    finally:
        _close(run, client)


def unsent_write_is_never_applied(run: Runner, client: Any, nodes: Sequence[Any], size: int) -> None:
    """Pause ``nodes`` while ``client`` SETs ``size`` bytes (it fails), resume them, have a later
    write acknowledged, then check that the timed-out write never lands, given the time a
    lingering connection would take to send the rest (the event loop running, for asyncio)."""
    run(lambda: client.delete("unsent-write"))
    with paused(*nodes), pytest.raises(RedisError) as err:
        run(lambda: client.set("unsent-write", b"x" * size))
    started = time.monotonic()
    while True:  # the server back: a write acknowledged after the timed-out one
        try:
            if run(lambda: client.set("unsent-write-after", b"back")):
                break
        except RedisError:
            assert time.monotonic() - started < 30, "the server did not come back"
            time.sleep(0.05)
    run(lambda: asyncio.sleep(1.0) if run.loop else time.sleep(1.0))
    assert run(lambda: client.exists("unsent-write")) == 0, repr(err.value)


def test_async_cluster_write_that_timed_out_unsent_is_never_applied(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """Every node SIGSTOPped (so none fails over meanwhile), on connect_async()'s Cluster client.
    Must hold: a 32 MiB SET that timed out (the kernel takes about 4 MiB of it) is never applied
    once the nodes are back: each node connection it went out on dropped what it had not sent
    (redis-py's graceful close sent the rest, and the write landed after a later one)."""
    cluster = fault_servers.cluster(server_kind)
    run = Runner(True)
    client = _client(run, cluster.url, socket_timeout=0.5)
    try:
        unsent_write_is_never_applied(run, client, cluster.nodes, 32 << 20)
    finally:
        _close(run, client)
        run.close()


def test_connect_to_an_unreachable_cluster() -> None:
    """The sync cluster client reads the topology when built: ``rp.connect`` to a cluster with
    no reachable node raises ServerUnavailable at once, its password masked."""
    url = f"redis+cluster://:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(rp.ServerUnavailable) as caught:
        rp.connect(url, socket_connect_timeout=TIMEOUT)
    assert isinstance(caught.value, RedisConnectionError)
    assert PASSWORD not in f"{caught.value} {caught.value.url}"
    assert caught.value.__cause__ is not None


def test_a_redis_error_from_user_code_is_left_alone(run: Runner) -> None:
    """A cached function that fails with a redis error of its own (its own client, another
    server): the caller gets that very exception, not a ServerUnavailable naming our server."""
    import fakeredis

    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server) if run.loop else fakeredis.FakeRedis(server=server)
    theirs = RedisConnectionError("their database is down")

    def fail(x: int) -> int:
        raise theirs

    async def afail(x: int) -> int:
        raise theirs

    fn: Any = rp.cached(client=client, ttl=60)(afail if run.loop else fail)
    with pytest.raises(RedisConnectionError) as caught:
        run(lambda: fn(1))
    assert caught.value is theirs
    assert not isinstance(caught.value, rp.RedisPatternsError)
