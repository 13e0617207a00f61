"""Shared pooled clients: ``connect()``, ``connect_async()``, ``configure()``.

One client (and so one connection pool) per URL, options and runtime; asyncio clients are also
kept per event loop, since a pool cannot be shared between loops. Whatever the URL, the client
gets the same pinned policy (redis-py's ``Redis()`` and ``from_url()`` differ):

* connect timeout 2 s, socket timeout 5 s, TCP keepalive, health check every 15 s;
* no blind retries in the client (``Retry(NoBackoff(), 0)``, the asyncio ``Retry`` for asyncio
  clients): the runners retry read-only operations after a connection error, and never repeat a
  write whose reply was lost;
* RESP2 (the reply shapes every supported server and fakeredis agree on);
* a blocking pool of 100 connections that waits up to 10 s rather than failing.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://``, ``valkey://`` / ``valkeys://`` (aliases),
``redis+cluster://h1:p1,h2:p2`` (``rediss+cluster://`` for TLS) and
``redis+sentinel://h1:p1,h2:p2/service/db``. ``$REDIS_URL`` is used when no URL is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Union
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from . import _compat, _loops, _pools
from .errors import ConfigurationError, ServerUnavailable

__all__ = [
    "AsyncClient",
    "DEFAULT_URL",
    "PINNED",
    "SyncClient",
    "aclose",
    "check_client",
    "close",
    "configure",
    "connect",
    "connect_async",
    "default_async_client",
    "default_client",
    "describe_url",
    "is_async_client",
]

SyncClient = Union[redis.Redis, redis.cluster.RedisCluster]
AsyncClient = Union[redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster]

DEFAULT_URL = "redis://localhost:6379/0"
PINNED: Mapping[str, Any] = {
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 15,
    "protocol": 2,
    "client_name": "redispatterns",
}
_POOL_SIZE = 100
_MAX_CLIENTS = 64  # per flavour (asyncio: per loop): past it the oldest client is closed
_POOL_WAIT = 10.0
_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")

_lock = threading.Lock()
_sync: dict[tuple[Any, ...], SyncClient] = {}
_unbound: dict[tuple[Any, ...], AsyncClient] = {}  # connect_async() outside a running loop
_log = logging.getLogger("redispatterns")
_default_url: str | None = None
_default_client: SyncClient | None = None
_default_async: AsyncClient | None = None


def _url(url: str | None) -> str:
    if url is None:
        url = _default_url or os.environ.get("REDIS_URL") or DEFAULT_URL
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    return url


def _key(url: str, opts: Mapping[str, Any]) -> tuple[Any, ...]:
    if not opts:
        return (url, ())
    return (url, tuple(sorted((k, repr(v)) for k, v in opts.items())))


def _options(opts: Mapping[str, Any], asyncio_: bool) -> dict[str, Any]:
    merged = dict(PINNED)
    merged.update(opts)
    merged.setdefault("retry", _compat.no_retry(asyncio_=asyncio_))
    return merged


def _hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    user = password = None
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, _, pw = cred.partition(":")
        user, password = (unquote(user) or None), (unquote(pw) or None)
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ConfigurationError(f"bad port {port_text!r} in {netloc!r}") from None
        hosts.append((host, port))
    if not hosts:
        raise ConfigurationError("the URL names no host")
    return user, password, hosts


def _split(url: str) -> tuple[str, Any]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {describe_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in (*_SCHEMES, "redis+cluster", "rediss+cluster", "redis+sentinel"):
        raise ConfigurationError(
            f"bad Redis URL {describe_url(url)!r}: scheme must be redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )
    return scheme, parts


def _query(parts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in parse_qsl(parts.query):
        if k.endswith("timeout") or k == "health_check_interval":
            try:
                out[k] = float(v)
            except ValueError:
                raise ConfigurationError(f"URL option {k}= must be a number of seconds") from None
        else:
            out[k] = v
    return out


def describe_url(url: str) -> str:
    """The URL with any password masked and the query dropped (for messages and logs).

    Plain text handling, so it also masks URLs too malformed to parse, and never raises.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    if "@" in rest:  # the last "@": a password may hold "/", "?", "#" or "@" unencoded
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in cred else f"{user}@{host}"
    return head + sep + rest.split("?", 1)[0]


def _build(url: str, opts: Mapping[str, Any], asyncio_: bool) -> Any:
    scheme, parts = _split(url)
    kw = _options(opts, asyncio_)
    if scheme in _SCHEMES:
        if scheme.startswith("valkey"):
            url = "redis" + url[len("valkey") :]
        pool_cls = _pools.AsyncQueuingPool if asyncio_ else _pools.QueuingPool
        kw.setdefault("max_connections", _POOL_SIZE)
        kw.setdefault("timeout", _POOL_WAIT)
        if scheme == "unix":  # no TCP options on a unix socket
            kw.pop("socket_keepalive", None)
        try:
            pool = pool_cls.from_url(url, **kw)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {describe_url(url)!r}: {exc}") from None
        client = (redis.asyncio.Redis if asyncio_ else redis.Redis).from_pool(pool)  # type: ignore[arg-type]
        return _pools.mark_direct(client, pool)
    if scheme.endswith("+cluster"):
        user, password, hosts = _hosts(parts.netloc, 6379)
        kw.update(_query(parts))
        if scheme.startswith("rediss"):
            kw["ssl"] = True
        kw.setdefault("max_connections", _POOL_SIZE)
        if user:
            kw["username"] = user
        if password:
            kw["password"] = password
        nodes = [_compat.cluster_node(h, p, asyncio_=asyncio_) for h, p in hosts]
        if asyncio_:
            cluster = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **kw)
            return _compat.abort_cluster_on_error(cluster)
        # node pools that wait rather than raise MaxConnectionsError; redis-py applies
        # connection_pool_class only on its from-URL path, so name the first node by URL too
        kw.setdefault("connection_pool_class", _pools.QueuingPool)
        first = f"{'rediss' if kw.get('ssl') else 'redis'}://{hosts[0][0]}:{hosts[0][1]}"
        try:  # the sync cluster client reads the topology now: no node answering is an outage
            return redis.cluster.RedisCluster(startup_nodes=nodes, url=first, **kw)
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            text = str(exc)
            outage = isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))
            if not (outage or "cannot be connected" in text or "not covered" in text):
                raise
            shown = describe_url(url)
            raise ServerUnavailable(f"Redis unavailable ({shown}): {text}", url=shown) from exc
    # redis+sentinel://[user:pass@]h1:p1,h2:p2/service[/db]
    user, password, hosts = _hosts(parts.netloc, 26379)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigurationError(
            f"bad sentinel URL {describe_url(url)!r}: name the service, "
            "redis+sentinel://h1:26379,h2:26379/mymaster/0"
        )
    service = unquote(path[0])
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise ConfigurationError(f"bad database number {path[1]!r} in {describe_url(url)!r}") from None
    kw.update(_query(parts))
    if user:
        kw["username"] = user
    if password:
        kw["password"] = password
    sentinel_kw: dict[str, Any] = {k: kw[k] for k in ("socket_connect_timeout", "socket_timeout") if k in kw}
    master = _compat.sentinel(hosts, sentinel_kw, asyncio_=asyncio_, **kw).master_for(service, db=db)
    # the master's pool finds the master on every connect (a failover is a reconnect), so the
    # runners may use its connections directly too
    return _pools.mark_direct(master, master.connection_pool)


def connect(url: str | None = None, **opts: Any) -> SyncClient:
    """The shared sync client for ``url`` (default ``$REDIS_URL``), built with our policy.

    Options override the pinned defaults (``socket_timeout=1.0``, ``decode_responses=True``, ...).
    The same URL and options always give the same client, so one pool serves the process.
    """
    if url is None and not opts and _default_client is not None:
        return _default_client
    u = _url(url)
    k = _key(u, opts)
    client = _sync.get(k)
    if client is None:
        with _lock:
            client = _sync.get(k)
            if client is None:
                client = _remember(_sync, k, _build(u, opts, asyncio_=False), None)
    return client


def _remember(
    cache: dict[tuple[Any, ...], Any],
    key: tuple[Any, ...],
    client: Any,
    loop: asyncio.AbstractEventLoop | None,
) -> Any:
    """Keep ``client`` under ``key``; past ``_MAX_CLIENTS`` the oldest entry is forgotten and
    closed (a holder that still uses it reconnects on its next call)."""
    while len(cache) >= _MAX_CLIENTS:
        old = cache.pop(next(iter(cache)))
        if isinstance(old, redis.cluster.RedisCluster):
            pass  # a closed sync Cluster client cannot reconnect: forgotten, closed when collected
        elif not is_async_client(old):
            old.close()
        elif loop is not None:  # the running loop: closed by a task (we hold the lock)
            _loops.close_client(old, loop)
        # an asyncio client made outside any loop is only forgotten
    cache[key] = client
    return client


def connect_async(url: str | None = None, **opts: Any) -> AsyncClient:
    """The shared asyncio client for ``url`` in the running event loop (see :func:`connect`).

    Each event loop gets its own client (a connection only works in the loop that opened it),
    closed when that loop shuts down (``asyncio.run`` and friends). Called outside a running
    loop, it returns a client that binds to the first loop that uses it.
    """
    if url is None and not opts and _default_async is not None:
        return _default_async
    u = _url(url)
    k = _key(u, opts)
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    cache = _unbound if loop is None else _loops.for_loop(loop).clients
    client = cache.get(k)
    if client is None:
        with _lock:
            client = cache.get(k)
            if client is None:
                client = _remember(cache, k, _build(u, opts, asyncio_=True), loop)
    return client


def _close_sync(client: Any) -> None:
    """Close a sync client and every node pool of a Cluster (redis-py 8.0's ``RedisCluster.close``
    leaves the node connections open)."""
    client.close()
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client
        for node in cluster.get_nodes():
            node_client: Any = getattr(node, "redis_connection", None)
            if node_client is not None:
                node_client.connection_pool.disconnect()


def close() -> None:
    """Close every pooled client the library created (``connect()``, ``connect_async()``,
    ``configure(url)``); later calls make new ones. Clients passed in are the caller's to close.

    Asyncio clients of a loop running in this thread are closed by a task (use ``await
    rp.aclose()`` there to wait for it); those of a loop in another thread are closed in it.
    """
    with _lock:
        sync = list(_sync.values())
        _sync.clear()
        unbound = list(_unbound.values())
        _unbound.clear()
    for c in sync:
        try:
            _close_sync(c)
        except Exception:  # best effort: one dead server must not keep the rest open
            _log.debug("closing %r failed", c, exc_info=True)
    for a in unbound:
        _loops.close_client(a, _loops.bound_loop(a))
    for entry in _loops.loops():
        loop = entry.loop()
        with _lock:
            clients = list(entry.clients.values())
            entry.clients.clear()
        for c in clients:
            _loops.close_client(c, loop)


async def aclose() -> None:
    """``close()``, waiting for the running loop's clients to close."""
    loop = asyncio.get_running_loop()
    entry = _loops.for_loop(loop)
    with _lock:
        mine = list(entry.clients.values())
        entry.clients.clear()
        unbound = [c for k, c in _unbound.items() if _loops.bound_loop(c) is loop]
        for k in [k for k, c in _unbound.items() if c in unbound]:
            del _unbound[k]
    close()
    await _loops.aclose_all([*mine, *unbound])


def configure(
    url: str | None = None,
    *,
    client: SyncClient | None = None,
    async_client: AsyncClient | None = None,
) -> None:
    """Set the process default used by patterns given no ``client=`` or ``mount=``.

    ``configure("redis://cache:6379/0")`` or ``configure(client=my_redis)``; an existing client
    is used as it is (its own timeouts and retries apply). ``configure()`` resets to $REDIS_URL.
    """
    global _default_url, _default_client, _default_async
    if url is not None:
        _split(_url(url))
    if client is not None:
        check_client(client, asyncio_=False)
    if async_client is not None:
        check_client(async_client, asyncio_=True)
    with _lock:
        _default_url, _default_client, _default_async = url, client, async_client


def default_client() -> SyncClient:
    """The process default sync client (``configure()``, else ``$REDIS_URL``)."""
    if _default_client is not None:
        return _default_client
    client = _sync.get((_default_url or os.environ.get("REDIS_URL") or DEFAULT_URL, ()))
    return client if client is not None else connect(_default_url)


def default_async_client() -> AsyncClient:
    """The process default asyncio client for the running loop."""
    if _default_async is not None:
        return _default_async
    try:
        entry = _loops.current(asyncio.get_running_loop())
    except RuntimeError:
        entry = None
    if entry is not None:  # the usual case: this loop's client, without building the key again
        client: AsyncClient | None = entry.clients.get(
            (_default_url or os.environ.get("REDIS_URL") or DEFAULT_URL, ())
        )
        if client is not None:
            return client
    return connect_async(_default_url)


def is_async_client(client: object) -> bool:
    """True for redis.asyncio clients (and fakeredis's async ones)."""
    return isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster))


def check_client(client: object, *, asyncio_: bool) -> None:
    """``TypeError`` unless ``client`` is a redis-py client of the wanted flavour."""
    sync_types = (redis.Redis, redis.cluster.RedisCluster)
    async_types = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
    if asyncio_:
        if isinstance(client, async_types):
            return
        if isinstance(client, sync_types):
            raise TypeError("this is the asyncio API: pass a redis.asyncio client (or use the sync class)")
    else:
        if isinstance(client, sync_types):
            return
        if isinstance(client, async_types):
            raise TypeError("this is the sync API: pass a redis.Redis client (or use the Async class)")
    raise TypeError(f"expected a redis-py client, not {type(client).__name__}")
