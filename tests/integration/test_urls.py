"""Every URL form reaches a real server with the same pinned policy."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import redispatterns as rp
from redispatterns._pools import DIRECT
from redispatterns.client import describe_url
from redispatterns.testing import StandaloneServer, free_port
from redispatterns.testing.plugin import ServerPool


@pytest.fixture
def kind(server_pool: ServerPool) -> Any:
    return next(iter(server_pool.kinds.values()))


def _policy(client: Any) -> dict[str, Any]:
    kw = client.connection_pool.connection_kwargs
    return {k: kw.get(k) for k in ("socket_timeout", "socket_connect_timeout", "health_check_interval")}


PINNED = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, "health_check_interval": 15}


def test_unix_socket(kind: Any, tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with StandaloneServer(kind, args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
        c = rp.connect(f"unix://{sock}?db=0")
        assert c.ping() is True
        assert _policy(c) == PINNED

        async def go() -> bool:
            ac = rp.connect_async(f"unix://{sock}?db=0")
            try:
                return bool(await ac.ping())
            finally:
                await ac.aclose()

        assert asyncio.run(go())
        c.close()


def test_valkey_scheme_alias(standalone_url: str) -> None:
    c = rp.connect(standalone_url.replace("redis://", "valkey://"))
    assert c.ping() is True


def test_rediss_uses_tls_connections() -> None:
    c: Any = rp.connect("rediss://localhost:6390/0")
    assert c.connection_pool.connection_class is redis.SSLConnection
    assert _policy(c) == PINNED


@pytest.fixture
def sentinel(kind: Any, tmp_path: Path) -> Iterator[tuple[StandaloneServer, int]]:
    with _sentinel_beside_a_master(kind, tmp_path) as up:
        yield up


@contextlib.contextmanager
def _sentinel_beside_a_master(kind: Any, tmp_path: Path) -> Iterator[tuple[StandaloneServer, int]]:
    """A master and a sentinel watching it (as ``mymaster``): the master and the sentinel's port."""
    master = StandaloneServer(kind)
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):  # a port taken between free_port() and the bind: another one
            port = free_port()
            conf = tmp_path / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
            )
            proc = subprocess.Popen(
                [kind.server, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if _sentinel_up(proc, port):
                break
        else:
            pytest.fail("sentinel never came up on any of 5 ports")
        yield master, port
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        master.stop()


def _sentinel_up(proc: subprocess.Popen[bytes], port: int) -> bool:
    """True once the sentinel on ``port`` knows its master; False when it exited (its port taken)."""
    # no retries: a probe that reached another process's port must fail fast, so the loop sees
    # the sentinel exit (it does at once when its bind fails)
    probe: Any = redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + 15
    try:
        while proc.poll() is None:
            try:
                if probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                    return True
            except redis.RedisError:  # not up yet; or another process holds the port: it exits
                pass
            assert time.monotonic() < deadline, "sentinel never came up"
            time.sleep(0.05)
        return False
    finally:
        probe.close()


def test_the_sentinel_fixture_moves_off_a_taken_port(
    kind: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as held:  # a listener that never answers, on the first port handed out
        held.bind(("127.0.0.1", 0))
        held.listen()
        ports, real = iter([int(held.getsockname()[1])]), free_port
        monkeypatch.setattr(sys.modules[__name__], "free_port", lambda: next(ports, None) or real())
        with _sentinel_beside_a_master(kind, tmp_path) as (master, port):
            assert port != held.getsockname()[1]
            with redis.Redis(port=port) as probe:
                assert (
                    probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")[1]
                    == str(master.port).encode()
                )


def test_sentinel_url(sentinel: tuple[StandaloneServer, int]) -> None:
    master, port = sentinel
    url = f"redis+sentinel://127.0.0.1:{port}/mymaster/0"
    c: Any = rp.connect(url)
    assert c.set("k", "v") is True
    with redis.Redis(port=master.port) as direct:
        assert direct.get("k") == b"v"  # it went to the monitored master
    kw = c.connection_pool.connection_kwargs
    assert kw["socket_timeout"] == 5.0 and kw["retry"].get_retries() == 0
    # the runners send scripts straight on the master's pool: a limiter works through it
    assert getattr(c, DIRECT) is c.connection_pool
    lim = rp.SlidingWindowLimiter(2, 60, client=c, name="sentinel")
    assert [lim.hit("x").allowed for _ in range(3)] == [True, True, False]

    async def go() -> Any:
        ac: Any = rp.connect_async(url)
        try:
            assert getattr(ac, DIRECT) is ac.connection_pool
            alim = rp.AsyncSlidingWindowLimiter(2, 60, client=ac, name="sentinel-async")
            assert [(await alim.hit("x")).allowed for _ in range(3)] == [True, True, False]
            return await ac.get("k")
        finally:
            await ac.aclose()

    assert asyncio.run(go()) == b"v"


def test_sentinel_async_write_that_timed_out_unsent_is_never_applied(
    sentinel: tuple[StandaloneServer, int],
) -> None:
    """The master SIGSTOPped under a Sentinel asyncio client: a 32 MiB SET that timed out (the
    kernel takes about 4 MiB of it) is never applied once the master is back, its connection
    having dropped what it had not sent (redis-py's graceful close sent the rest later)."""
    from tests.faults.test_outage_errors import Runner, _client, _close, unsent_write_is_never_applied

    master, port = sentinel
    run = Runner(True)
    client = _client(run, f"redis+sentinel://127.0.0.1:{port}/mymaster/0", socket_timeout=0.5)
    try:
        unsent_write_is_never_applied(run, client, [master.node], 32 << 20)
    finally:
        _close(run, client)
        run.close()


def test_describe_url_masks_passwords() -> None:
    assert describe_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert describe_url("redis://u@h:1/0") == "redis://u@h:1/0"
    assert "secret" not in describe_url("redis+cluster://:secret@h1:1,h2:2")


@pytest.mark.parametrize(
    "url",
    [
        "htp://user:s3cr3tpw@h:1/0",  # mistyped scheme
        "redis://user:s3cr3tpw@[::1/0",  # bad IPv6 bracket
        "redis+sentinel://user:s3cr3tpw@h:1/svc/notadb",  # bad database number
        "redis://user:s3cr3tpw@h:1/0?socket_timeout=soon",  # bad option value
        "redis+cluster://user:s3cr3tpw@h:x",  # bad port
        "redis://:pa/ss?w#s3cr3tpw@h:1/0",  # unencoded "/", "?" and "#" in the password
    ],
)
def test_no_error_or_doctor_line_shows_a_password(url: str) -> None:
    with pytest.raises(rp.ConfigurationError) as info:
        rp.connect(url)
    assert "s3cr3tpw" not in str(info.value)
    assert "s3cr3tpw" not in describe_url(url)
    out = subprocess.run(
        [sys.executable, "-m", "redispatterns", "doctor", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "s3cr3tpw" not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_bad_urls_raise_configuration_errors() -> None:
    for url in ("http://x", "redis+sentinel://h:1", "redis+sentinel://h:1/svc/notadb", "redis+cluster://h:x"):
        with pytest.raises(rp.ConfigurationError):
            rp.connect(url)
    with pytest.raises(TypeError):
        rp.connect(42)  # type: ignore[arg-type]


def test_configure_sets_the_process_default(standalone_url: str) -> None:
    from redispatterns.client import default_client

    mine = redis.Redis.from_url(standalone_url)
    try:
        rp.configure(client=mine)
        assert default_client() is mine
        assert rp.connect() is mine
        with pytest.raises(TypeError, match="sync API"):
            rp.configure(client=redis.asyncio.Redis())  # type: ignore[arg-type]
        rp.configure(standalone_url)
        assert default_client().ping() is True
    finally:
        rp.configure()
        mine.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_every_client_kind_builds_without_a_warning(
    flavour: str, server_pool: ServerPool, tmp_path: Path
) -> None:
    """Every construction path gives the flavour's own no-retry policy and warns about nothing."""
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry as SyncRetry

    kind = next(iter(server_pool.kinds))
    standalone = server_pool.standalone(kind).url
    cluster = server_pool.cluster(kind)
    reachable = {
        "redis": standalone,
        "valkey": standalone.replace("redis://", "valkey://"),
        "cluster": f"redis+cluster://127.0.0.1:{cluster.ports[0]}",
    }
    # built, not connected: nothing listens there (their round trips are covered above)
    offline = {
        "rediss": "rediss://127.0.0.1:6390/0",
        "unix": f"unix://{tmp_path / 'absent.sock'}?db=0",
        "sentinel": "redis+sentinel://127.0.0.1:26390/mymaster/0",
    }
    wanted = AsyncRetry if flavour == "async" else SyncRetry

    def retries(c: Any) -> list[Any]:
        holders = [getattr(c, "connection_pool", None)]
        nodes = getattr(c, "nodes_manager", None)
        for n in nodes.nodes_cache.values() if nodes is not None else ():
            # a sync cluster node owns a Redis with a pool; an asyncio one holds the kwargs itself
            holders.append(getattr(getattr(n, "redis_connection", None), "connection_pool", n))
        found = [h.connection_kwargs.get("retry") for h in holders if h is not None]
        found = [r for r in found if r is not None]
        if getattr(c, "retry", None) is not None:
            found.append(c.retry)
        return found

    async def build_async() -> None:
        for name, url in {**reachable, **offline}.items():
            c: Any = rp.connect_async(url)
            if name in reachable:
                assert await c.ping() is True, name
            assert retries(c) and all(type(r) is wanted for r in retries(c)), name
            await c.aclose()

    gc.collect()  # earlier tests' garbage (an async client of a closed loop) is not this test's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)  # what GC finalises meanwhile, not a build
        if flavour == "async":
            asyncio.run(build_async())
        else:
            for name, url in {**reachable, **offline}.items():
                c: Any = rp.connect(url)
                if name in reachable:
                    assert c.ping() is True, name
                assert retries(c) and all(type(r) is wanted for r in retries(c)), name


def test_connect_async_is_silent_under_w_error(standalone_url: str) -> None:
    code = (
        "import asyncio, redispatterns as rp\n"
        "async def main():\n"
        f"    c = rp.connect_async({standalone_url!r})\n"
        "    assert await c.ping()\n"
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
