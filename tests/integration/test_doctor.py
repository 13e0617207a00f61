"""``doctor`` for production on real servers: eviction vs locks, persistence, slow log, cluster health."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redispatterns._doctor import check
from redispatterns.client import connect
from redispatterns.testing.plugin import Backend


def _skip_fake(backend: Backend) -> None:
    if backend.is_fake:
        pytest.skip("doctor reads INFO, CONFIG, SLOWLOG and LATENCY: real servers only")


def _plain_clients(backend: Backend) -> list[redis.Redis]:
    assert backend.url
    client: Any = connect(backend.url)
    if backend.is_cluster:
        return [n.redis_connection for n in client.get_nodes() if n.redis_connection is not None]
    return [client]


@contextlib.contextmanager
def configured(backend: Backend, **settings: Any) -> Iterator[None]:
    """CONFIG SET on every node, restored afterwards (the servers are shared by the session)."""
    nodes = _plain_clients(backend)
    saved: list[dict[str, Any]] = [
        {k: c.config_get(k.replace("_", "-"))[k.replace("_", "-")] for k in settings} for c in nodes
    ]
    try:
        for c in nodes:
            for k, v in settings.items():
                c.config_set(k.replace("_", "-"), v)
        yield
    finally:
        for c, old in zip(nodes, saved, strict=True):
            for k, v in old.items():
                c.config_set(k.replace("_", "-"), v)


def run(backend: Backend, uses: tuple[str, ...] | None, **kw: Any) -> tuple[int, str]:
    assert backend.url
    lines: list[str] = []
    code = check(connect(backend.url), uses, say=lines.append, **kw)
    return code, "\n".join(lines)


def test_allkeys_lru_with_locks_in_use_blocks(backend: Backend) -> None:
    _skip_fake(backend)
    with configured(backend, maxmemory_policy="allkeys-lru", maxmemory="1gb"):
        code, out = run(backend, ("lock",))
        assert code == 1, out
        assert "FAIL  eviction     maxmemory-policy allkeys-lru evicts any key" in out
        assert "second holder" in out and "NOT READY" in out
        code, out = run(backend, ("cache",))  # a cache-only application is fine with it
        assert "FAIL  eviction" not in out and "OK    eviction" in out
        code, out = run(backend, ("stream", "cache"))
        assert code == 1 and "messages lost" in out
    with configured(backend, maxmemory_policy="volatile-lru", maxmemory="1gb"):
        code, out = run(backend, ("lock",))  # locks carry a TTL: volatile-* evicts them too
        assert code == 1 and "keys with a TTL" in out
        code, out = run(backend, ("store", "cache"))  # store keys carry none
        assert "FAIL  eviction" not in out


def test_no_persistence_blocks_fences_and_streams_but_not_caches(backend: Backend) -> None:
    _skip_fake(backend)
    # the test servers run with neither AOF nor RDB snapshots
    code, out = run(backend, ("lock", "stream"))
    assert code == 1, out
    assert "FAIL  persistence  no persistence" in out and "fencing tokens" in out
    code, out = run(backend, ("cache",))
    assert code == 0, out
    assert "persistence" not in out
    with configured(backend, save="3600 1"):
        code, out = run(backend, ("stream",))
        assert "WARN  persistence  RDB snapshots only" in out
        assert "FAIL  persistence" not in out


def test_memory_headroom_and_slowlog(backend: Backend) -> None:
    _skip_fake(backend)
    code, out = run(backend, ("cache",))
    assert "WARN  memory       no maxmemory" in out
    nodes = _plain_clients(backend)
    for c in nodes:
        c.slowlog_reset()
    busy = "local i = 0 while i < 5000000 do i = i + 1 end return i"  # some 50 ms of Lua
    with configured(backend, slowlog_log_slower_than="1000"):
        nodes[0].eval(busy, 0)
        code, out = run(backend, ("cache",))
    assert "WARN  slowlog" in out and "EVAL" in out.upper(), out
    assert code == 0  # latency findings advise, they do not block
    assert run(backend, ("cache",), strict=True)[0] == 1  # --strict makes warnings block
    used = max(int(c.info("memory")["used_memory"]) for c in nodes)
    with configured(backend, maxmemory=str(int(used * 1.02) + 4096)):
        code, out = run(backend, ("cache",))
    assert "FAIL  memory" in out and "about to be refused" in out
    assert code == 1


def test_cluster_health(backend: Backend) -> None:
    _skip_fake(backend)
    code, out = run(backend, ("cache",))
    assert code == 0, out  # no replica is a warning, not a block
    if backend.is_cluster:
        assert "OK    cluster      cluster_state ok, all 16384 slots assigned" in out
        assert "3 of 3 primaries have no replica" in out  # the test cluster has none
        assert out.count("primary 127.0.0.1:") == 3
    else:
        assert "cluster" not in out.split("patterns")[1]


def test_cli_without_uses_advises_and_with_uses_gates(backend: Backend) -> None:
    _skip_fake(backend)
    assert backend.url

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "redispatterns", "doctor", "--url", backend.url or "", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )

    plain = cli()
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "more would block for some pattern" in plain.stdout
    gated = cli("--uses", "locks,streams")
    assert gated.returncode == 1 and "patterns      lock, stream" in gated.stdout
    bad = cli("--uses", "queues")
    assert bad.returncode == 2 and "unknown pattern 'queues'" in bad.stderr
