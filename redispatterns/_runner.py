"""The two runners: the only code that talks to Redis, sleeps or reads clocks.

``run_sync(client, flow)`` and ``await run_async(client, flow)`` drive a flow from
:mod:`redispatterns._core`: they execute each yielded operation, send the reply back into the
flow, or throw the error in at the ``yield``. Both follow the same table:

=========  =====================================================================
op         effect
=========  =====================================================================
Command    ``client.execute_command(*args)``; read-only commands are retried on
           connection errors with jittered backoff, writes are sent once
Script     EVALSHA; on NOSCRIPT, SCRIPT LOAD (all primaries on a cluster) and once more
Batch      one pipeline (MULTI/EXEC when ``transaction``; scripts inside go as EVAL);
           the list of replies
Sleep      sleep, then the monotonic clock
Now        the monotonic clock;  WallClock: ``time.time()``
Compute    call the user's function (awaited when it returns an awaitable)
Probe      the server's kind, version and capabilities, cached per client
=========  =====================================================================
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
import weakref
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster as _AsyncCluster
from redis.cluster import RedisCluster as _SyncCluster
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core.ops import Batch, Command, Compute, Flow, Now, Op, Probe, Script, Sleep, WallClock
from ._core.server import ServerInfo, parse_info

__all__ = [
    "READ_RETRIES",
    "ensure_ready",
    "run_async",
    "run_sync",
    "server_info",
    "server_info_async",
    "socket_timeout",
]

T = TypeVar("T")

READ_RETRIES = 2  # extra attempts for read-only operations after a connection error
_RETRY_ON = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)

_infos: weakref.WeakKeyDictionary[Any, ServerInfo] = weakref.WeakKeyDictionary()


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(0.2, 0.01 * (2**attempt)))


def _kind_hint(client: Any) -> str | None:
    mod = type(client).__module__
    return "fakeredis" if mod.startswith("fakeredis") else None


def _info_from(client: Any, raw: Any) -> ServerInfo:
    if isinstance(raw, dict) and raw and all(isinstance(v, dict) for v in raw.values()):
        raw = next(iter(raw.values()))  # cluster: one reply per node
    info = parse_info(raw)
    hint = _kind_hint(client)
    if hint:
        info = ServerInfo(hint, info.version, info.mode, info.capabilities)
    if type(client).__name__ == "RedisCluster":
        info = ServerInfo(info.kind, info.version, "cluster", info.capabilities)
    return info


def _fake_info(client: Any) -> ServerInfo:
    """fakeredis has no INFO: report its emulated version with the capabilities it emulates."""
    server = client.connection_pool.connection_kwargs.get("server")
    version = (*tuple(getattr(server, "version", (7,))), 0, 0)
    return _info_from(client, {"redis_version": ".".join(map(str, version[:3]))})


# what a connection applies when its client names no socket timeout (5 s in redis-py 8)
_DEFAULT_SOCKET_TIMEOUT: float | None = (
    inspect.signature(AbstractConnection.__init__).parameters["socket_timeout"].default
)


def socket_timeout(client: Any) -> float | None:
    """The read timeout ``client``'s connections apply to each reply; ``None``: they wait forever.

    Reads the connection settings of a plain client (its pool), a sync Cluster (its nodes
    manager) or an asyncio Cluster (the client itself); unset means redis-py's default.
    """
    for holder in (getattr(client, "connection_pool", None), getattr(client, "nodes_manager", None), client):
        kwargs = getattr(holder, "connection_kwargs", None)
        if isinstance(kwargs, dict):
            value = kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
            return float(value) if value else None
    return _DEFAULT_SOCKET_TIMEOUT


def server_info(client: Any) -> ServerInfo:
    """The server's kind, version, mode and capabilities (one INFO, then cached)."""
    info = _infos.get(client)
    if info is None:
        if _kind_hint(client) == "fakeredis":
            info = _fake_info(client)
        else:
            info = _info_from(client, client.info("server"))
        _infos[client] = info
    return info


async def server_info_async(client: Any) -> ServerInfo:
    """The asyncio twin of :func:`server_info`."""
    info = _infos.get(client)
    if info is None:
        await ensure_ready(client)
        if _kind_hint(client) == "fakeredis":
            info = _fake_info(client)
        else:
            info = _info_from(client, await client.info("server"))
        _infos[client] = info
    return info


# --------------------------------------------------------------------------- sync


def _pipelined(sub: Command | Script) -> tuple[Any, ...]:
    """A batch's op as pipeline arguments. Scripts go as EVAL with their source: no NOSCRIPT
    can strike halfway through a batch (nothing to re-send), no SCRIPT EXISTS round trip first
    (redis-py's way), and Cluster pipelines accept it (they refuse EVALSHA)."""
    if type(sub) is Command:
        return sub.args
    s = cast(Script, sub)
    return ("EVAL", s.script.source, len(s.keys), *s.keys, *s.args)


def _batch_sync(client: Any, op: Batch) -> Any:
    pipe = client.pipeline(transaction=op.transaction)
    for sub in op.ops:
        pipe.execute_command(*_pipelined(sub))
    return pipe.execute(raise_on_error=op.raise_on_error)


# Commands whose keys redis-py's cluster client can only learn by asking the server
# (COMMAND GETKEYS, a round trip per call). With declared keys we route them ourselves.
_MOVABLE_KEYS = frozenset({"XREAD", "XREADGROUP", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE",
                           "ZUNION", "ZINTER", "ZDIFF", "SORT", "SORT_RO", "LMPOP", "ZMPOP"})  # fmt: skip
_CLUSTERS = (_SyncCluster, _AsyncCluster)


def _routed(client: Any, cmd: Command) -> dict[str, Any]:
    """``target_nodes=`` for a movable-keys command with declared keys on a cluster client."""
    if cmd.keys and cmd.args[0] in _MOVABLE_KEYS and isinstance(client, _CLUSTERS):
        cluster: Any = client
        return {"target_nodes": cluster.get_node_from_key(cmd.keys[0])}
    return {}


def _exec_sync(client: Any, op: Op) -> Any:
    t = type(op)
    if t is Command:
        cmd = cast(Command, op)
        if cmd.keys:
            return client.execute_command(*cmd.args, **_routed(client, cmd))
        return client.execute_command(*cmd.args)
    if t is Script:
        s = cast(Script, op)
        sc = s.script
        try:
            return client.execute_command("EVALSHA", sc.sha, len(s.keys), *s.keys, *s.args)
        except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / failover
            client.script_load(sc.source)
            return client.execute_command("EVALSHA", sc.sha, len(s.keys), *s.keys, *s.args)
    if t is Batch:
        return _batch_sync(client, cast(Batch, op))
    if t is Sleep:
        time.sleep(cast(Sleep, op).seconds)
        return time.monotonic()
    if t is Now:
        return time.monotonic()
    if t is WallClock:
        return time.time()
    if t is Compute:
        c = cast(Compute, op)
        result = c.fn(*c.args, **c.kwargs)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(f"{c.fn!r} is async: use the asyncio API for it")
        return result
    if t is Probe:
        return server_info(client)
    raise TypeError(f"flow yielded {op!r}, which is not an operation")


def _exec_sync_retrying(client: Any, op: Op) -> Any:
    attempt = 0
    while True:
        try:
            return _exec_sync(client, op)
        except _RETRY_ON:
            if attempt >= READ_RETRIES or not getattr(op, "retryable", False):
                raise
            time.sleep(_backoff(attempt))
            attempt += 1


def run_sync(client: Any, flow: Flow[T]) -> T:
    """Drive ``flow`` to completion on a sync client and return its result."""
    try:
        op = next(flow)
        while True:
            try:
                reply = _exec_sync_retrying(client, op)
            except Exception as exc:  # thrown into the flow, which may handle it
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return cast(T, stop.value)
    finally:
        flow.close()


# --------------------------------------------------------------------------- async


async def _batch_async(client: Any, op: Batch) -> Any:
    pipe = client.pipeline(transaction=op.transaction)
    for sub in op.ops:
        pipe.execute_command(*_pipelined(sub))
    return await pipe.execute(raise_on_error=op.raise_on_error)


async def _exec_async(client: Any, op: Op) -> Any:
    t = type(op)
    if t is Command:
        cmd = cast(Command, op)
        if cmd.keys:
            return await client.execute_command(*cmd.args, **_routed(client, cmd))
        return await client.execute_command(*cmd.args)
    if t is Script:
        s = cast(Script, op)
        sc = s.script
        try:
            return await client.execute_command("EVALSHA", sc.sha, len(s.keys), *s.keys, *s.args)
        except NoScriptError:
            await client.script_load(sc.source)
            return await client.execute_command("EVALSHA", sc.sha, len(s.keys), *s.keys, *s.args)
    if t is Batch:
        return await _batch_async(client, cast(Batch, op))
    if t is Sleep:
        await asyncio.sleep(cast(Sleep, op).seconds)
        return time.monotonic()
    if t is Now:
        return time.monotonic()
    if t is WallClock:
        return time.time()
    if t is Compute:
        c = cast(Compute, op)
        result = c.fn(*c.args, **c.kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    if t is Probe:
        return await server_info_async(client)
    raise TypeError(f"flow yielded {op!r}, which is not an operation")


async def _exec_async_retrying(client: Any, op: Op) -> Any:
    attempt = 0
    while True:
        try:
            return await _exec_async(client, op)
        except _RETRY_ON:
            if attempt >= READ_RETRIES or not getattr(op, "retryable", False):
                raise
            await asyncio.sleep(_backoff(attempt))
            attempt += 1


async def ensure_ready(client: Any) -> None:
    """Initialise an asyncio cluster client once, before concurrent first calls.

    redis-py 8.1's asyncio ``RedisCluster`` races when many tasks make its first calls at once
    (the startup nodes' connections are closed under them: ``'NoneType' object has no attribute
    'writelines'`` / "Connection closed by server"); one ``initialize()`` first avoids it.
    """
    if getattr(client, "_initialize", False) is True and isinstance(client, _AsyncCluster):
        await client.initialize()


async def run_async(client: Any, flow: Flow[T]) -> T:
    """Drive ``flow`` to completion on an asyncio client and return its result."""
    if getattr(client, "_initialize", False) is True:
        await ensure_ready(client)
    try:
        op = next(flow)
        while True:
            try:
                reply = await _exec_async_retrying(client, op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return cast(T, stop.value)
    finally:
        flow.close()
