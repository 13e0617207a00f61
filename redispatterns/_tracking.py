"""Server-assisted invalidation for near tiers (runner layer: it owns its sockets and threads).

One :class:`Tracking` per (server, key prefix): for each primary node, a daemon thread keeps
two connections of its own: a *reader* subscribed to ``__redis__:invalidate`` and a *control*
connection that ran ``CLIENT TRACKING ON REDIRECT <reader> BCAST PREFIX <prefix>``. The server
then reports every write to a key under the prefix, by anyone, to the reader, which drops those
keys from every registered :class:`~redispatterns._core.near.NearStore`.

Why BCAST: default-mode tracking remembers the keys each connection *read*, so every pooled
connection of the data client would need its own ``CLIENT TRACKING`` (a hook on connect, and
asyncio and Cluster pools to patch); BCAST needs one control connection per node, whatever the
clients, at the price of invalidations for keys this process never cached (a dictionary miss).

Coherence rules: while any node's link is down, :attr:`Tracking.healthy` is False (the shells
neither serve nor fill the near tier); a link that drops or comes up flushes every store, so no
read that began before a gap is ever kept. RESP2 only; TLS and Sentinel clients are not
supported (the near tier then stays off).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import hiredis
import redis

from ._core.near import NearStore

__all__ = ["Tracking", "near_store", "trackable", "tracking_for"]


log = logging.getLogger("redispatterns.cache")
CHANNEL = b"__redis__:invalidate"
_KWARGS = ("host", "port", "username", "password", "socket_connect_timeout")
HEARTBEAT = 1.0  # seconds between checks of the control connection while nothing arrives


def near_store(max_entries: int, max_bytes: int) -> NearStore:
    """A near tier shared by threads (its lock is a runner-layer object)."""
    return NearStore(max_entries, max_bytes, threading.Lock())


class _Conn:
    """A bare RESP2 connection of the link (its own socket, parsed with hiredis): redis-py's
    connections may hand pub/sub frames to their push handlers instead of returning them."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        timeout = kwargs.get("socket_connect_timeout") or 5.0
        self.sock = socket.create_connection((kwargs["host"], int(kwargs["port"])), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(HEARTBEAT + 5.0)
        self.reader: Any = hiredis.Reader()
        if kwargs.get("password"):
            user = kwargs.get("username")
            self.call("AUTH", *((user,) if user else ()), kwargs["password"])

    def send(self, *args: Any) -> None:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def read(self, timeout: float | None = None) -> Any:
        """The next reply; None when ``timeout`` passes with nothing to read."""
        while True:
            got = self.reader.gets()
            if got is not False:
                if isinstance(got, Exception):
                    raise got
                return got
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            data = self.sock.recv(65536)
            if not data:
                raise redis.ConnectionError("connection closed by the server")
            self.reader.feed(data)

    def call(self, *args: Any) -> Any:
        self.send(*args)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _NodeLink:
    """The reader and control connections of one node, driven by a daemon thread."""

    def __init__(self, owner: Tracking, kwargs: dict[str, Any]) -> None:
        self.owner = owner
        self.kwargs = kwargs
        self.up = False
        self.thread = threading.Thread(target=self._run, name=f"rp-tracking:{kwargs['port']}", daemon=True)
        self.thread.start()

    def _connect(self) -> tuple[_Conn, _Conn]:
        reader = _Conn(self.kwargs)
        rid = reader.call("CLIENT", "ID")
        control = _Conn(self.kwargs)
        reply = control.call(
            "CLIENT", "TRACKING", "ON", "REDIRECT", rid, "BCAST", "PREFIX", self.owner.prefix
        )
        if reply != b"OK":
            raise redis.ConnectionError(f"CLIENT TRACKING refused: {reply!r}")
        reader.call("SUBSCRIBE", CHANNEL)  # the subscription's confirmation
        return reader, control

    def _run(self) -> None:
        owner, stop = self.owner, self.owner.stopped
        pause = 0.05
        while not stop.is_set():
            reader: Any = None
            control: Any = None
            try:
                reader, control = self._connect()
                owner.link_up(self)
                pause = 0.05
                while not stop.is_set():
                    msg = reader.read(HEARTBEAT)
                    if msg is not None:
                        owner.deliver(msg)
                    elif owner.orphaned():  # every cached function using it is gone
                        owner.close()
                    else:  # quiet: is the connection that holds the tracking still there?
                        control.call("PING")
            except Exception as exc:  # the link dropped: flush, then reconnect with backoff
                if self.up and not stop.is_set():  # once per outage
                    port = self.kwargs["port"]
                    log.warning("near cache invalidation link to port %s lost (%r): flushed", port, exc)
            finally:
                owner.link_down(self)
                for conn in (reader, control):
                    if conn is not None:
                        conn.close()
            if owner.orphaned():
                owner.close()
            stop.wait(pause)
            pause = min(pause * 2, 1.0)


class Tracking:
    """Invalidation links to every primary of one server (or Cluster) for one key prefix."""

    def __init__(self, nodes: Iterable[dict[str, Any]], prefix: str) -> None:
        self.prefix = prefix
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._stores: weakref.WeakSet[NearStore] = weakref.WeakSet()
        self._had_stores = False
        self.healthy = False
        self._links = [_NodeLink(self, kw) for kw in nodes]

    def register(self, store: NearStore) -> None:
        with self._lock:
            store.flush()
            self._stores.add(store)
            self._had_stores = True

    def _flush_all(self) -> None:
        for store in list(self._stores):
            store.flush()

    def link_up(self, link: _NodeLink) -> None:
        with self._lock:
            self._flush_all()  # nothing read before the link was up may be kept
            link.up = True
            self.healthy = all(x.up for x in self._links)

    def link_down(self, link: _NodeLink) -> None:
        with self._lock:
            self.healthy = False
            if link.up:
                self._flush_all()
            link.up = False

    def deliver(self, msg: Any) -> None:
        """One pub/sub message: drop its keys from every store (a null payload: flush all)."""
        if not isinstance(msg, list) or len(msg) != 3 or msg[0] not in (b"message", "message"):
            return
        keys = msg[2]
        if keys is None:
            self._flush_all()
            return
        names = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        for store in list(self._stores):
            store.drop(names)

    def wait_healthy(self, timeout: float) -> bool:
        """For tests and start-up: wait until every link is up (True) or ``timeout`` passes."""
        deadline = threading.Event()
        waited = 0.0
        while not self.healthy and waited < timeout:
            deadline.wait(0.01)
            waited += 0.01
        return self.healthy

    def orphaned(self) -> bool:
        """True once every store that registered has been garbage-collected."""
        return self._had_stores and not self._stores

    def close(self) -> None:
        """Stop every link (their threads end within a heartbeat) and forget this tracker."""
        self.stopped.set()
        with _trackers_lock:
            for ident, t in list(_trackers.items()):
                if t is self:
                    del _trackers[ident]


_trackers: dict[tuple[Any, ...], Tracking] = {}
_trackers_lock = threading.Lock()


def trackable(client: Any) -> bool:
    """Whether a near tier can be kept coherent for ``client`` (not fakeredis, not TLS)."""
    if type(client).__module__.startswith("fakeredis"):
        return False
    holder = getattr(client, "nodes_manager", None) or getattr(client, "connection_pool", None) or client
    kwargs = getattr(holder, "connection_kwargs", None) or {}
    cls = str(getattr(holder, "connection_class", ""))
    return not kwargs.get("ssl") and "SSL" not in cls and "Unix" not in cls


def _nodes_of(client: Any) -> list[dict[str, Any]]:
    """Connection settings of each primary of ``client`` ([]: not known yet, an asyncio
    Cluster before its first command)."""
    primaries = getattr(client, "get_primaries", None)
    if primaries is not None:  # Cluster, sync or asyncio
        holder = getattr(client, "nodes_manager", client)
        base = dict(getattr(holder, "connection_kwargs", {}) or {})
        return [
            {**{k: base[k] for k in _KWARGS if base.get(k) is not None}, "host": n.host, "port": int(n.port)}
            for n in primaries()
        ]
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict) or "host" not in kwargs:
        return []
    node = {k: kwargs[k] for k in _KWARGS if kwargs.get(k) is not None}
    node["db"] = kwargs.get("db", 0)
    return [node]


def tracking_for(client: Any, prefix: str) -> Tracking | None:
    """The shared links for ``client``'s server(s) and ``prefix``, started on first use; None
    while the nodes are not known yet (see :func:`trackable` for clients never tracked)."""
    nodes = _nodes_of(client)
    if not nodes:
        return None
    ident = (tuple(sorted((n["host"], n["port"], n.get("db", 0)) for n in nodes)), prefix)
    with _trackers_lock:
        found = _trackers.get(ident)
        if found is None:
            found = _trackers[ident] = Tracking(nodes, prefix)
    return found
