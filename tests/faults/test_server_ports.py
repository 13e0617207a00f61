"""The test servers survive a port taken between ``free_port()`` and the server's bind (another
xdist worker starting servers at the same moment): the node starts again on another port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from redispatterns.testing import servers
from redispatterns.testing.servers import ClusterServer, ServerKind, StandaloneServer


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something else is listening on, one a cluster node could have been given
    (its bus port, 10000 above, fits under 65536)."""
    for _ in range(50):
        port = servers.free_port(with_bus=True)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken meanwhile: another
                continue
            s.listen()
            yield port
            return
    raise AssertionError("no free port to hold")


def _first_taken(monkeypatch: pytest.MonkeyPatch, held: int) -> list[int]:
    """``free_port()`` hands out ``held`` once, then real free ports; the ports handed out."""
    real = servers.free_port
    given: list[int] = []

    def fake(*, with_bus: bool = False) -> int:
        port = held if not given else real(with_bus=with_bus)
        given.append(port)
        return port

    monkeypatch.setattr(servers, "free_port", fake)
    return given


def test_a_standalone_server_moves_off_a_taken_port(
    server_kind: ServerKind, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = _first_taken(monkeypatch, held_port)
    server = StandaloneServer(server_kind)
    try:
        assert given[0] == held_port and len(given) == 2
        assert server.port == given[1] != held_port
        assert redis.Redis.from_url(server.url).ping() is True
    finally:
        server.stop()


def test_a_cluster_node_moves_off_a_taken_port(
    server_kind: ServerKind, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = _first_taken(monkeypatch, held_port)
    cluster = ClusterServer(server_kind)
    try:
        ports = [n.port for n in cluster.nodes]
        assert given[0] == held_port and held_port not in ports and len(set(ports)) == 3
        c = redis.cluster.RedisCluster(host="127.0.0.1", port=ports[0])
        try:
            assert c.set("{a}k", "v") is True and c.get("{a}k") == b"v"
        finally:
            c.close()
    finally:
        cluster.stop()
