"""Server-assisted invalidation for near tiers (runner layer: it owns its sockets and threads).

One :class:`Tracking` per (server, key prefixes): for each node, a daemon thread keeps two
connections of its own: a *reader* subscribed to ``__redis__:invalidate`` and a *control*
connection that ran ``CLIENT TRACKING ON REDIRECT <reader> BCAST PREFIX <p> [PREFIX <p> ...]``.
The server then reports every write to a key under the prefixes, by anyone, to the reader,
which drops those keys from every registered :class:`~redispatterns._core.near.NearStore`.

Why BCAST: default-mode tracking remembers the keys each connection *read*, so every pooled
connection of the data client would need its own ``CLIENT TRACKING`` (a hook on connect, and
asyncio and Cluster pools to patch); BCAST needs one control connection per node, whatever the
clients, at the price of invalidations for keys this process never cached (a dictionary miss).

Cluster: every node is linked, replicas included. A replica sends nothing while it replicates
(measured on Redis 7.0 and Valkey 8.1), but the moment it is promoted its link already reports
the writes it takes, so a failover leaves no gap in the invalidations. A watcher thread reads
``CLUSTER NODES`` every :data:`TOPOLOGY_EVERY` seconds (at once after a link drops): links are
opened to nodes that joined and closed for nodes flagged ``fail`` or gone, and a change in the
set of primaries flushes every store.

Coherence rules: while any linked node's link is down, :attr:`Tracking.healthy` is False (the
shells neither serve nor fill the near tier); a link that drops or comes up flushes every store,
so no read that began before a gap is ever kept. RESP2 only; TLS and Sentinel clients are not
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
TOPOLOGY_EVERY = 0.5  # seconds between two reads of a Cluster's topology
QUIET_WINDOW = 0.0001  # seconds a "no invalidation waiting" answer is reused (see Tracking.quiet)


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

    def read(self, timeout: float | None = None, busy: set[Any] | None = None) -> Any:
        """The next reply; None when ``timeout`` passes with nothing to read. With ``busy``,
        this connection is in that set from the moment bytes are ready until everything parsed
        from them was handed out (the caller has applied it when it calls again)."""
        while True:
            got = self.reader.gets()
            if got is not False:
                if isinstance(got, Exception):
                    raise got
                return got
            if busy is not None and not self.reader.has_data():
                busy.discard(self)  # nothing read and not applied (not even half a message)
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            if busy is not None:
                busy.add(self)
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
        self.stopped = threading.Event()  # this link only (a node that left the cluster)
        self.thread = threading.Thread(target=self._run, name=f"rp-tracking:{kwargs['port']}", daemon=True)
        self.thread.start()

    def _connect(self) -> tuple[_Conn, _Conn]:
        reader = _Conn(self.kwargs)
        rid = reader.call("CLIENT", "ID")
        control = _Conn(self.kwargs)
        prefixes = [a for p in self.owner.prefixes for a in ("PREFIX", p)]
        reply = control.call("CLIENT", "TRACKING", "ON", "REDIRECT", rid, "BCAST", *prefixes)
        if reply != b"OK":
            raise redis.ConnectionError(f"CLIENT TRACKING refused: {reply!r}")
        reader.call("SUBSCRIBE", CHANNEL)  # the subscription's confirmation
        return reader, control

    def _ended(self) -> bool:
        return self.stopped.is_set() or self.owner.stopped.is_set()

    def _run(self) -> None:
        owner = self.owner
        pause = 0.05
        while not self._ended():
            reader: Any = None
            control: Any = None
            try:
                reader, control = self._connect()
                owner.watch(reader)
                owner.link_up(self)
                pause = 0.05
                while not self._ended():
                    msg = reader.read(HEARTBEAT, owner.busy)
                    if msg is not None:
                        owner.deliver(msg)
                    elif owner.orphaned():  # every near tier using it is gone
                        owner.close()
                    else:  # quiet: is the connection that holds the tracking still there?
                        control.call("PING")
            except Exception as exc:  # the link dropped: flush, then reconnect with backoff
                if self.up and not self._ended():  # once per outage
                    port = self.kwargs["port"]
                    log.warning("near cache invalidation link to port %s lost (%r): flushed", port, exc)
            finally:
                owner.link_down(self)
                if reader is not None:
                    owner.unwatch(reader)
                for conn in (reader, control):
                    if conn is not None:
                        conn.close()
            if owner.orphaned():
                owner.close()
            self.stopped.wait(pause)
            pause = min(pause * 2, 1.0)


def _addr(kw: dict[str, Any]) -> tuple[str, int]:
    return (str(kw["host"]), int(kw["port"]))


class Tracking:
    """Invalidation links to every node of one server (or Cluster) for some key prefixes."""

    def __init__(self, nodes: Iterable[dict[str, Any]], prefixes: tuple[str, ...], cluster: bool) -> None:
        self.prefixes = prefixes
        self.cluster = cluster
        self.stopped = threading.Event()
        self.topology_changes = 0
        """How many times the set of primaries changed under this tracker (each flushed)."""
        self._lock = threading.Lock()
        self._stores: weakref.WeakSet[NearStore] = weakref.WeakSet()
        self._had_stores = False
        self.healthy = False
        nodes = list(nodes)
        self._base = {k: v for k, v in nodes[0].items() if k not in ("host", "port")} if nodes else {}
        self._links: dict[tuple[str, int], _NodeLink] = {}
        self._primaries: frozenset[tuple[str, int]] | None = None
        self._wake = threading.Event()
        self.busy: set[_Conn] = set()  # readers holding bytes not yet applied
        self._quiet_at = float("-inf")
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._socks: list[socket.socket] = []
        with self._lock:
            for kw in nodes:
                self._links[_addr(kw)] = _NodeLink(self, kw)
        if cluster:
            threading.Thread(target=self._watch, name="rp-tracking-topology", daemon=True).start()

    @property
    def linked(self) -> dict[tuple[str, int], bool]:
        """Each linked node's address and whether its link is up (for tests and diagnostics)."""
        with self._lock:
            return {a: link.up for a, link in self._links.items()}

    def watch(self, conn: _Conn) -> None:
        """Include a reader's socket in :meth:`quiet`'s check."""
        with self._lock:
            self._socks.append(conn.sock)
            if self._epoll is not None:
                self._epoll.register(conn.sock.fileno(), select.EPOLLIN)

    def unwatch(self, conn: _Conn) -> None:
        with self._lock:
            self.busy.discard(conn)
            with contextlib.suppress(ValueError):
                self._socks.remove(conn.sock)
            if self._epoll is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(conn.sock.fileno())

    def quiet(self, now: float) -> bool:
        """Whether no invalidation is waiting: none unread on a link's socket, none read and not
        yet applied. The server writes a write's invalidation before its reply to the writer, so
        on one host a read that finds the links quiet cannot miss a write acknowledged before it
        began. The socket check is a syscall (~0.8 us): a quiet answer is reused for
        :data:`QUIET_WINDOW` seconds of ``now`` (the caller's monotonic clock)."""
        if self.busy:
            return False
        if now - self._quiet_at < QUIET_WINDOW:
            return True
        if self._epoll is not None:
            if self._epoll.poll(0):
                return False
        elif self._socks and select.select(list(self._socks), [], [], 0)[0]:
            return False
        self._quiet_at = now
        return True

    def register(self, store: NearStore) -> None:
        with self._lock:
            store.flush()
            self._stores.add(store)
            self._had_stores = True

    def _flush_all(self) -> None:
        for store in list(self._stores):
            store.flush()

    def _check(self) -> None:  # under the lock
        self.healthy = bool(self._links) and all(x.up for x in self._links.values())

    def link_up(self, link: _NodeLink) -> None:
        with self._lock:
            self._flush_all()  # nothing read before the link was up may be kept
            link.up = True
            self._check()

    def link_down(self, link: _NodeLink) -> None:
        with self._lock:
            self.healthy = False
            if link.up:
                self._flush_all()
            link.up = False
            self._check()
        self._wake.set()  # a node may have failed: read the topology now

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

    def _watch(self) -> None:
        """Cluster only: follow the topology (see the module docstring)."""
        conn: _Conn | None = None
        while not self.stopped.is_set():
            try:
                if conn is None:
                    conn = self._any_node()
                if conn is not None:
                    self.reconcile(_cluster_nodes(conn.call("CLUSTER", "NODES")))
            except Exception:
                if conn is not None:
                    conn.close()
                conn = None
            if self.orphaned():
                self.close()
            self._wake.wait(TOPOLOGY_EVERY)
            self._wake.clear()
        if conn is not None:
            conn.close()

    def _any_node(self) -> _Conn | None:
        with self._lock:
            addrs = sorted(self._links, key=lambda a: not self._links[a].up)  # live links first
        for host, port in addrs:
            try:
                return _Conn({**self._base, "host": host, "port": port})
            except OSError:
                continue
        return None

    def reconcile(self, view: dict[tuple[str, int], tuple[bool, bool]]) -> None:
        """Apply a topology read: ``address -> (serves slots as a primary, flagged failed)``."""
        wanted = {a for a, (_, failed) in view.items() if not failed}
        primaries = frozenset(a for a, (serving, failed) in view.items() if serving and not failed)
        if not wanted:
            return
        with self._lock:
            for addr in wanted - self._links.keys():
                self._links[addr] = _NodeLink(self, {**self._base, "host": addr[0], "port": addr[1]})
            for addr in self._links.keys() - wanted:
                self._links.pop(addr).stopped.set()
            if self._primaries is not None and primaries != self._primaries:
                self.topology_changes += 1
                self._flush_all()
                log.info("near cache: the cluster's primaries changed (%d now): flushed", len(primaries))
            self._primaries = primaries
            self._check()

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
        self._wake.set()
        with _trackers_lock:
            if self in _trackers:
                _trackers.remove(self)


def _cluster_nodes(reply: Any) -> dict[tuple[str, int], tuple[bool, bool]]:
    """``CLUSTER NODES`` as ``address -> (a primary serving slots, flagged failed)``."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    out: dict[tuple[str, int], tuple[bool, bool]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        host, _, port = parts[1].split("@")[0].split(",")[0].rpartition(":")
        flags = set(parts[2].split(","))
        if not host or not port or flags & {"noaddr", "handshake"}:
            continue
        serving = "master" in flags and any(not p.startswith("[") for p in parts[8:])
        out[(host, int(port))] = (serving, "fail" in flags)
    return out


_trackers: list[Tracking] = []
_trackers_lock = threading.Lock()


def trackable(client: Any) -> bool:
    """Whether a near tier can be kept coherent for ``client`` (not fakeredis, not TLS)."""
    if type(client).__module__.startswith("fakeredis"):
        return False
    holder = getattr(client, "nodes_manager", None) or getattr(client, "connection_pool", None) or client
    kwargs = getattr(holder, "connection_kwargs", None) or {}
    cls = str(getattr(holder, "connection_class", ""))
    return not kwargs.get("ssl") and "SSL" not in cls and "Unix" not in cls


def _nodes_of(client: Any) -> tuple[list[dict[str, Any]], bool]:
    """Connection settings of each node of ``client`` and whether it is a Cluster ([]: not
    known yet, an asyncio Cluster before its first command)."""
    every = getattr(client, "get_nodes", None)
    if every is not None:  # Cluster, sync or asyncio: every node, replicas included
        holder = getattr(client, "nodes_manager", client)
        base = dict(getattr(holder, "connection_kwargs", {}) or {})
        common = {k: base[k] for k in _KWARGS if base.get(k) is not None}
        return [{**common, "host": n.host, "port": int(n.port)} for n in every()], True
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not isinstance(kwargs, dict) or "host" not in kwargs:
        return [], False
    node = {k: kwargs[k] for k in _KWARGS if kwargs.get(k) is not None}
    node["db"] = kwargs.get("db", 0)
    return [node], False


def tracking_for(client: Any, prefixes: tuple[str, ...]) -> Tracking | None:
    """The shared links for ``client``'s server(s) and ``prefixes``, started on first use; None
    while the nodes are not known yet (see :func:`trackable` for clients never tracked). A
    Cluster's tracker is found by any node it links, so it survives topology changes."""
    nodes, cluster = _nodes_of(client)
    if not nodes:
        return None
    prefixes = tuple(sorted(set(prefixes)))
    addrs = {(str(n["host"]), int(n["port"]), n.get("db", 0)) for n in nodes}
    with _trackers_lock:
        for t in _trackers:
            if t.prefixes == prefixes and t.cluster == cluster and not t.stopped.is_set():
                mine = {(h, p, t._base.get("db", 0)) for h, p in t.linked}
                if mine & addrs:
                    return t
        found = Tracking(nodes, prefixes, cluster)
        _trackers.append(found)
    return found
