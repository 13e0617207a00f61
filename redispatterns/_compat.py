"""Everything that depends on the installed redis-py release (8.0 to 8.2), in one place.

* Retry policies: asyncio clients need ``redis.asyncio.retry.Retry`` (redis-py 8.2 warns and
  converts a sync ``redis.retry.Retry``), sync clients ``redis.retry.Retry``.
* Constructors whose type hints changed between releases (``Sentinel`` and ``ClusterNode`` were
  untyped before 8.2): called through ``Any`` so one source type-checks against every release.
* The command packer of the connections our pools make (:func:`pack_directly`): a private hook
  (``_command_packer``) that the sync connections of every 8.x release and the asyncio ones of
  8.1 on have.
* What an asyncio connection does when it fails (:func:`aborting`): its private ``_writer``,
  which every 8.x release keeps, is aborted rather than closed; a Cluster client's node classes
  are set through its ``nodes_manager`` (:func:`abort_cluster_on_error`).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
from hiredis import pack_command as _hiredis_pack
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "CLUSTER_PIPELINE_ASKS_KEYS",
    "REDIS_PY_VERSION",
    "abort_cluster_on_error",
    "aborting",
    "cluster_node",
    "no_retry",
    "pack_directly",
    "sentinel",
]

REDIS_PY_VERSION: tuple[int, ...] = tuple(int(p) for p in redis.__version__.split(".")[:2] if p.isdigit())

# redis-py 8.0's sync ClusterPipeline routes a command its policy table lacks (EVAL among them) by
# asking the server: COMMAND GETKEYS with the whole script, one round trip per queued script. The
# runner passes the target node itself there; 8.1 reads EVAL's keys locally again.
CLUSTER_PIPELINE_ASKS_KEYS: bool = REDIS_PY_VERSION < (8, 1)

_SENTINEL: dict[bool, Any] = {False: redis.sentinel.Sentinel, True: redis.asyncio.sentinel.Sentinel}
_CLUSTER_NODE: dict[bool, Any] = {False: redis.cluster.ClusterNode, True: redis.asyncio.cluster.ClusterNode}


def no_retry(*, asyncio_: bool) -> Retry | AsyncRetry:
    """A policy that never retries (the runners decide what is safe to repeat), of the right flavour."""
    return AsyncRetry(NoBackoff(), 0) if asyncio_ else Retry(NoBackoff(), 0)


def sentinel(
    hosts: list[tuple[str, int]], sentinel_kwargs: dict[str, Any], *, asyncio_: bool, **kw: Any
) -> Any:
    """A ``Sentinel`` (sync or asyncio) over ``hosts``; ``master_for`` gives the client (its
    asyncio connections :func:`aborting`)."""
    if asyncio_:
        ours = redis.asyncio.sentinel
        managed = ours.SentinelManagedSSLConnection if kw.get("ssl") else ours.SentinelManagedConnection
        kw["connection_class"] = aborting(kw.get("connection_class", managed))
    return _SENTINEL[asyncio_](hosts, sentinel_kwargs=sentinel_kwargs, **kw)


def cluster_node(host: str, port: int, *, asyncio_: bool) -> Any:
    """A startup ``ClusterNode`` (sync or asyncio)."""
    return _CLUSTER_NODE[asyncio_](host, port)


class _DirectPacker:
    """Hands hiredis a command's arguments as they are: str, bytes, int and float, the types it
    packs as redis-py's encoder would (UTF-8, ``repr`` for numbers). Anything else (``bool``,
    ``None``, ``bytearray``...), and a command name with a space in it (``"CONFIG GET"``, which
    redis-py splits), goes to redis-py's own packer, so its errors and splitting are unchanged.

    redis-py's packer runs every argument through a generator and its encoder first: about a
    fifth of the client's bytecode on a short script call (measured: 1,696 → 1,383 per limiter hit).
    """

    __slots__ = ("_slow",)

    def __init__(self, slow: Any) -> None:
        self._slow = slow

    def pack(self, *args: Any) -> Any:
        name = args[0]
        if type(name) is str and " " not in name:
            try:
                return [_hiredis_pack(args)]
            except TypeError:  # a type hiredis does not take: redis-py's encoder decides (and says why)
                pass
        return self._slow(*args)


_ABORTING: dict[Any, Any] = {}  # connection class -> its aborting subclass, made once


def aborting(cls: Any) -> Any:
    """``cls``, an asyncio connection class, made to drop what it has not sent when it
    disconnects on an error (a timeout, a reset, a cancellation).

    redis-py closes a failed connection with the transport's ``close()``, which still sends what
    asyncio holds once the server reads again: a write that timed out half-sent would be applied
    then, after writes acknowledged since. ``abort()`` drops it, and the server discards the cut
    command. A plain ``disconnect()`` (a pool closing) still closes gracefully."""
    if getattr(cls, "_rp_aborts", False):
        return cls
    made = _ABORTING.get(cls)
    if made is not None:
        return made

    async def disconnect(self: Any, nowait: bool = False, **kwargs: Any) -> None:
        writer = self._writer
        if writer is not None and (nowait or kwargs.get("error") is not None):
            writer.transport.abort()
        await cls.disconnect(self, nowait=nowait, **kwargs)

    made = type(f"Aborting{cls.__name__}", (cls,), {"disconnect": disconnect, "_rp_aborts": True})
    return _ABORTING.setdefault(cls, made)


def abort_cluster_on_error(client: Any) -> Any:
    """Give an asyncio Cluster client's node connections :func:`aborting`'s class: the nodes it
    starts from and those it finds later (created from the shared ``connection_kwargs``)."""
    nodes = client.nodes_manager
    cls = aborting(nodes.connection_kwargs.get("connection_class", redis.asyncio.Connection))
    nodes.connection_kwargs["connection_class"] = cls
    for node in nodes.startup_nodes.values():
        node.connection_class = cls
    return client


def pack_directly(conn: Any) -> Any:
    """Give a new connection the direct packer when it would pack exactly as redis-py does: redis-py
    chose its hiredis packer and the encoding is strict UTF-8 (hiredis's own). Returns ``conn``."""
    packer = getattr(conn, "_command_packer", None)
    enc = getattr(conn, "encoder", None)
    if (
        type(packer) is redis.connection.HiredisRespSerializer
        and enc is not None
        and str(enc.encoding).lower().replace("_", "-") in ("utf-8", "utf8")
        and enc.encoding_errors == "strict"
    ):
        conn._command_packer = _DirectPacker(packer.pack)
    return conn
