"""Private servers for fault tests: they are paused, killed and failed over, so never shared
with the rest of the suite (the plugin's servers stay healthy for other tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redispatterns.testing.servers import ClusterServer, ServerKind, StandaloneServer

TIMEOUT = 0.2  # socket timeout of the clients under test: a hung server costs this per call
OPTS: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}


class FaultServers:
    """Per server kind, started on first use in this worker and stopped at the end."""

    def __init__(self, backends: set[str]) -> None:
        self._made: dict[tuple[str, str], Any] = {}
        self._backends = backends

    def _get(self, what: str, kind: ServerKind, make: Any) -> Any:
        mode = "redis" if what == "standalone" else "cluster"
        if mode not in self._backends:  # --backends narrows fault tests too (make test-fast)
            pytest.skip(f"--backends leaves out {mode}")
        key = (what, kind.name)
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def standalone(self, kind: ServerKind) -> StandaloneServer:
        server: StandaloneServer = self._get("standalone", kind, lambda: StandaloneServer(kind))
        if server.node.proc.poll() is not None:  # a test killed it and failed before restarting
            server.restart()
        with redis.Redis(port=server.port) as admin:
            admin.flushall()
        return server

    def cluster(self, kind: ServerKind) -> ClusterServer:
        """3 masters + 3 replicas (one cluster per kind and worker serves every fault test)."""
        server: ClusterServer = self._get("cluster", kind, lambda: ClusterServer(kind, replicas=1))
        return _fresh(server)

    def stop(self) -> None:
        for s in self._made.values():
            with contextlib.suppress(Exception):
                s.stop()


def _fresh(cluster: ClusterServer) -> ClusterServer:
    """Every node up (restarted if a failed test left it down), every master flushed."""
    if any(n.proc.poll() is not None for n in cluster.nodes):
        cluster.restart()
    for port in cluster.master_ports():
        with redis.Redis(port=port) as admin:
            admin.flushall()
    return cluster


@pytest.fixture(scope="session")
def fault_servers(request: pytest.FixtureRequest) -> Iterator[FaultServers]:
    backends = {b.strip() for b in str(request.config.getoption("--backends")).split(",")}
    servers = FaultServers(backends)
    try:
        yield servers
    finally:
        servers.stop()


@contextlib.contextmanager
def paused(*nodes: Any) -> Iterator[None]:
    """SIGSTOP ``nodes`` for the block (a hung server), SIGCONT after, whatever happens."""
    for n in nodes:
        n.pause()
    try:
        yield
    finally:
        for n in nodes:
            n.resume()


@pytest.fixture(autouse=True)
def _timed_without_gc_pauses(no_gc_pauses: None) -> None:
    """Every fault test bounds how long a caller waits (see ``tests/conftest.py``)."""
