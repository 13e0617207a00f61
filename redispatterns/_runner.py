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
Batch      one pipeline (MULTI/EXEC when ``transaction``; scripts inside go as EVAL, or as
           EVALSHA where a plain client already holds them); the list of replies
Sleep      sleep, then the monotonic clock
Now        the monotonic clock;  WallClock: ``time.time()``
Compute    call the user's function (awaited when it returns an awaitable)
ComputeEach  call the user's function once per item, at most N at a time (worker threads
           of a shared pool / tasks), items of one key in order; one outcome per item
Probe      the server's kind, version and capabilities, cached per client
BlockingPop  BLPOP on a connection whose socket timeout outlives the block (a private
           pool for a plain sync client; else the block is kept under the client's
           socket timeout); ``None`` when the block ends empty
FanOut     one flow per client in parallel (a shared thread pool / ``asyncio.gather``),
           each bounded by the op's timeout; a failure or timeout is its exception
Coalesce   single-flight: the op's flow runs once per key at a time in this process
           (per event loop in asyncio); the others wait for its result
=========  =====================================================================

Write-behind persistence is a set of ordered queues of flows, each drained by one worker
(:class:`SyncQueues` threads / :class:`AsyncQueues` tasks). Background loops (lock renewal, ...)
are flows too: :func:`start_loop` runs one on a daemon
thread, :func:`start_loop_async` on a task; ``stop()`` ends it at its next operation (a sleep
ends at once) without delivering a reply that raced the stop. Shells read the clock through
:func:`monotonic`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import queue
import random
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from redis.asyncio.cluster import RedisCluster as _AsyncCluster
from redis.cluster import RedisCluster as _SyncCluster
from redis.connection import AbstractConnection
from redis.exceptions import (
    ClusterError,
    DataError,
    MaxConnectionsError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._compat import CLUSTER_PIPELINE_ASKS_KEYS
from ._core import validate
from ._core.ops import (
    MAX_BLOCK,
    MIN_BLOCK,
    NOT_RUN,
    Batch,
    BlockingPop,
    Coalesce,
    Command,
    Compute,
    ComputeEach,
    FanOut,
    Flow,
    Now,
    Op,
    Probe,
    Script,
    Sleep,
    WallClock,
)
from ._core.server import ServerInfo, parse_info
from ._loops import check_loop
from ._pools import DIRECT
from .errors import RedisPatternsError, ServerError, ServerUnavailable

__all__ = [
    "READ_RETRIES",
    "AsyncLoop",
    "AsyncQueues",
    "SyncLoop",
    "SyncQueues",
    "ensure_ready",
    "flights",
    "monotonic",
    "public_error",
    "run_async",
    "run_sync",
    "server_info",
    "server_info_async",
    "socket_timeout",
    "start_loop",
    "start_loop_async",
    "wallclock",
]

T = TypeVar("T")
log = logging.getLogger("redispatterns")
monotonic = time.monotonic
"""The clock of budgets and deadlines (what ``Now`` replies); shells read it only through here."""
wallclock = time.time
"""The wall clock (what ``WallClock`` replies): timestamps, never correctness."""

READ_RETRIES = 2  # extra attempts for read-only operations after a connection error
POOL_WAIT = 10.0  # how long a call waits for a free pooled connection (as client.py's pools do)
# A read is tried again after a connection error (the connection died: a new one may work), never
# after a timeout: the server may be hung, and each retry would cost another full timeout.
_RETRY_ON = (RedisConnectionError, ConnectionError)
# What a first attempt's error may lead to (a wait on a full pool, or a retry); anything else
# goes straight to the flow. RedisPatternsError from a nested runner is final (re-raised).
_RETRYABLE = (MaxConnectionsError, *_RETRY_ON)

_infos: weakref.WeakKeyDictionary[Any, ServerInfo] = weakref.WeakKeyDictionary()


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(0.2, 0.01 * (2**attempt)))


def _pool_full_wait(started: float | None) -> tuple[float, float]:
    """``(started, pause)`` for one more wait on a full connection pool, or raise when the pool
    has been full for ``POOL_WAIT`` seconds. A full pool refuses before anything is sent, so any
    op, a write included, may wait and try again: the wait a blocking pool would do, for clients
    whose pools raise instead (redis-py's asyncio cluster nodes)."""
    now = time.monotonic()
    if started is None:
        started = now
    if now - started >= POOL_WAIT:
        raise MaxConnectionsError(f"every pooled connection stayed busy for {POOL_WAIT:g} s")
    return started, random.uniform(0.001, 0.005)


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
    if isinstance(client, _CLUSTERS):
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


# --------------------------------------------------------------------------- errors

# outages: the server could not be used; ReadOnlyError is a write that reached a demoted master
# (a failover in progress), TryAgainError a multi-key command during a slot migration
_OUTAGE_TYPES = (RedisConnectionError, RedisTimeoutError, ClusterError, ReadOnlyError, TryAgainError)
_variants: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}
# errors raised by user code (Compute): a redis error from the user's own client is not ours to rename
_user_errors: weakref.WeakSet[BaseException] = weakref.WeakSet()


def _variant(base: type[RedisPatternsError], original: type[BaseException]) -> type[BaseException]:
    """``base`` that is also ``original`` (so ``except <redis-py class>`` keeps catching it)."""
    if issubclass(base, original):
        return base
    cls = _variants.get((base, original))
    if cls is None:

        def reduce(self: Any) -> tuple[Any, ...]:  # pickles as the plain public class
            return (base, (str(self),), {"url": getattr(self, "url", None)})

        ns = {"__module__": base.__module__, "__qualname__": base.__qualname__, "__reduce__": reduce}
        cls = _variants.setdefault((base, original), type(base.__name__, (base, original), ns))
    return cls


def _address(client: Any) -> tuple[str | None, str | None]:
    """``(where, password)``: the client's server as a URL without credentials, and its password."""
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kw, dict):
        if kw.get("path"):
            return f"unix://{kw['path']}", kw.get("password")
        if "host" in kw:
            return f"redis://{kw['host']}:{kw.get('port', 6379)}", kw.get("password")
    manager = getattr(client, "nodes_manager", None)
    nodes = getattr(manager, "startup_nodes", None)
    if isinstance(nodes, dict) and nodes:
        kw = getattr(manager, "connection_kwargs", None) or getattr(client, "connection_kwargs", None) or {}
        return "redis+cluster://" + ",".join(sorted(nodes)), kw.get("password")
    return None, None


def _from_user(exc: BaseException) -> None:
    """Remember that user code raised ``exc`` (only redis errors matter, and they can be
    weakly referenced; builtin exceptions cannot)."""
    if isinstance(exc, (RedisError, RedisClusterException)):
        _user_errors.add(exc)


def public_error(client: Any, exc: BaseException) -> BaseException | None:
    """What a Redis-side failure leaves the library as, or ``None`` when ``exc`` is not one.

    Outages become :class:`ServerUnavailable`, error replies :class:`ServerError`; either is also
    an instance of ``exc``'s redis-py class, carries ``exc``'s attributes, and never repeats the
    client's password. Errors of our own, and whatever user code raised (a ``Compute`` op: the
    user's own Redis client may fail too), are ``None``: they leave as they are.
    """
    if isinstance(exc, RedisPatternsError) or not isinstance(exc, (RedisError, RedisClusterException)):
        return None
    if exc in _user_errors:
        return None
    text = str(exc) or type(exc).__name__
    base: type[RedisPatternsError] = ServerError
    if isinstance(exc, _OUTAGE_TYPES):
        base = ServerUnavailable
    elif isinstance(exc, RedisClusterException):
        # no reachable node / uncovered slots are outages; the rest is a client-side misuse
        if not any(s in text for s in ("cannot be connected", "not covered")):
            return None
        base = ServerUnavailable
    elif isinstance(exc, DataError):  # a value redis-py cannot encode: the caller's mistake
        return None
    where, password = _address(client)
    if password and isinstance(password, str):
        text = text.replace(password, "***")
    message = f"Redis unavailable ({where}): {text}" if base is ServerUnavailable and where else text
    cls = _variant(base, type(exc))
    out: Any = cls.__new__(cls, message)
    Exception.__init__(out, message)
    out.__dict__.update(getattr(exc, "__dict__", {}))
    out.url = where
    return cast(BaseException, out)


# --------------------------------------------------------------------------- blocking waits

_blockers: weakref.WeakKeyDictionary[Any, tuple[Any, float]] = weakref.WeakKeyDictionary()
_blockers_lock = threading.Lock()


def _blocking_client(client: Any) -> tuple[Any, float]:
    """A client for blocking commands whose socket timeout exceeds the longest block (None:
    ``client`` itself), and that longest block.

    A plain sync ``Redis`` gets a private pool (same connection settings, socket timeout
    ``MAX_BLOCK + 5``, closed with its parent) so waiters neither time out nor take the
    connections holders need. Other clients (asyncio, Cluster, fakeredis) are used as they are,
    with blocks kept under their own socket timeout: an asyncio pool can't be closed from a
    finalizer, and its connections would outlive their event loop.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is not None and _kind_hint(client) is None and type(client) is redis.Redis:
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = MAX_BLOCK + 5.0
        clone: Any = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        weakref.finalize(client, clone.connection_pool.disconnect)
        return clone, MAX_BLOCK
    st = socket_timeout(client)
    return None, MAX_BLOCK if st is None else max(MIN_BLOCK, min(MAX_BLOCK, st - 1.0))


def blocker(client: Any) -> tuple[Any, float]:
    """``(client for blocking commands or None, longest block)``, built once per client; the
    cache holds ``client`` weakly."""
    found = _blockers.get(client)
    if found is None:
        with _blockers_lock:
            found = _blockers.get(client)
            if found is None:
                found = _blockers[client] = _blocking_client(client)
    return found


def _blpop_args(client: Any, op: BlockingPop) -> tuple[Any, tuple[str, str, str]]:
    clone, max_block = blocker(client)
    seconds = max(MIN_BLOCK, min(op.seconds, max_block))
    return (client if clone is None else clone), ("BLPOP", op.key, f"{seconds:.3f}")


# --------------------------------------------------------------------------- fan-out

_thread_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
_thread_pools_lock = threading.Lock()
FANOUT_THREADS = 32


def _threads(prefix: str, size: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's shared thread pool named ``prefix``, built on first use."""
    pool = _thread_pools.get(prefix)
    if pool is None:
        with _thread_pools_lock:
            pool = _thread_pools.get(prefix)
            if pool is None:
                pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix=prefix)
                _thread_pools[prefix] = pool
    return pool


def _fanout_sync(op: FanOut) -> list[Any]:
    futures = [_threads("rp-fanout", FANOUT_THREADS).submit(run_sync, c, op.make()) for c in op.clients]
    concurrent.futures.wait(futures, timeout=op.timeout)
    out: list[Any] = []
    for f in futures:
        if not f.done():
            out.append(TimeoutError("node timeout"))
        elif f.exception() is not None:
            out.append(f.exception())
        else:
            out.append(f.result())
    return out


async def _fanout_async(op: FanOut) -> list[Any]:
    async def one(c: Any) -> Any:
        return await asyncio.wait_for(run_async(c, op.make()), op.timeout)

    return list(await asyncio.gather(*(one(c) for c in op.clients), return_exceptions=True))


# --------------------------------------------------------------------------- concurrent user calls
# ComputeEach: a stream consumer's handler over a batch, N calls at a time. The items are cut into
# lanes (one per item, or one per key: a lane runs in order); workers take lanes until none is left.

EACH_THREADS = 256  # shared by every sync ComputeEach; an op never holds more than its concurrency


def _each_lanes(op: ComputeEach) -> tuple[list[Any], list[list[int]]]:
    """``(outcomes, lanes)``: every outcome ``NOT_RUN`` (a key that fails is that item's outcome)."""
    n = len(op.items)
    out: list[Any] = [NOT_RUN] * n
    if op.key is None:
        return out, [[i] for i in range(n)]
    by_key: dict[Any, list[int]] = {}
    lanes: list[list[int]] = []
    for i, item in enumerate(op.items):
        try:
            k = op.key(item)
            lane = by_key.get(k)
        except Exception as exc:  # the key function failed, or gave an unhashable key
            out[i] = exc
            continue
        if lane is None:
            lane = by_key[k] = []
            lanes.append(lane)
        lane.append(i)
    return out, lanes


def _each_sync(op: ComputeEach) -> list[Any]:
    fn, items, stop = op.fn, op.items, op.stop
    if op.concurrency <= 1 and op.key is None:  # the hot path: in order, on this thread
        out: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            if stop:  # a flag: non-empty once a stop is asked
                out[i:] = [NOT_RUN] * (len(items) - i)
                break
            try:
                fn(item)
            except Exception as exc:
                out[i] = exc
        return out
    out, lanes = _each_lanes(op)

    def run_lane(lane: list[int]) -> None:
        for i in lane:
            if stop:  # a flag: non-empty once a stop is asked
                return
            try:
                fn(items[i])
                out[i] = None
            except Exception as exc:
                out[i] = exc

    if op.concurrency <= 1 or len(lanes) <= 1:
        for lane in lanes:
            run_lane(lane)
        return out
    todo = collections.deque(lanes)

    def worker() -> None:
        while True:
            try:
                lane = todo.popleft()  # atomic: no lock needed
            except IndexError:
                return
            run_lane(lane)

    pool = _threads("rp-handler", EACH_THREADS)
    futures = [pool.submit(worker) for _ in range(min(op.concurrency, len(lanes)))]
    for f in futures:
        f.result()
    return out


# What a plain handler returns most often, and is never awaitable: no inspect.isawaitable() call.
_PLAIN_RESULTS = frozenset({tuple, list, dict, str, bytes, int, float, bool, type(None)})


async def _each_async(op: ComputeEach) -> list[Any]:
    fn, items, stop = op.fn, op.items, op.stop
    isawaitable, plain, coro = inspect.isawaitable, _PLAIN_RESULTS, types.CoroutineType
    if op.concurrency <= 1 and op.key is None:  # the hot path: in order, in this task
        out: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            if stop:  # a flag: non-empty once a stop is asked
                out[i:] = [NOT_RUN] * (len(items) - i)
                break
            try:
                r = fn(item)
                if type(r) not in plain and (type(r) is coro or isawaitable(r)):  # one test when plain
                    await r
            except Exception as exc:
                out[i] = exc
        return out
    out, lanes = _each_lanes(op)

    async def run_lane(lane: list[int]) -> None:
        for i in lane:
            if stop:  # a flag: non-empty once a stop is asked
                return
            try:
                r = fn(items[i])
                if r is not None and isawaitable(r):
                    await r
                out[i] = None
            except Exception as exc:
                out[i] = exc

    if op.concurrency <= 1 or len(lanes) <= 1:
        for lane in lanes:
            await run_lane(lane)
        return out
    todo = collections.deque(lanes)

    async def worker() -> None:
        while todo:
            await run_lane(todo.popleft())

    await asyncio.gather(*(worker() for _ in range(min(op.concurrency, len(lanes)))))
    return out


# --------------------------------------------------------------------------- single-flight


class _Flight:
    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event: threading.Event | None = None  # made only when a second caller arrives
        self.value: Any = None
        self.error: BaseException | None = None


class SyncFlights:
    """One flow per key at a time in this process; the others wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Flight] = {}

    def do(self, client: Any, op: Coalesce) -> tuple[Any, bool]:
        key = op.key
        with self._lock:
            flight = self._calls.get(key)
            if flight is None:
                flight = self._calls[key] = _Flight()
                event = None
            else:
                event = flight.event
                if event is None:
                    event = flight.event = threading.Event()
        if event is not None:  # a follower
            event.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value, False
        try:
            flight.value = run_sync(client, op.make())
            return flight.value, True
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
                event = flight.event
            if event is not None:
                event.set()


class _AsyncFlight:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None  # made only when a second caller arrives


class AsyncFlights:
    """The asyncio twin of :class:`SyncFlights`: one flight per key per event loop."""

    def __init__(self) -> None:
        # id(loop) -> (weakref to the loop, its flights); an entry leaves with its loop
        self._loops: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], dict[str, _AsyncFlight]]] = {}

    def _calls(self, loop: asyncio.AbstractEventLoop) -> dict[str, _AsyncFlight]:
        key = id(loop)
        entry = self._loops.get(key)
        if entry is None or entry[0]() is not loop:
            entry = self._loops[key] = (weakref.ref(loop, lambda _: self._loops.pop(key, None)), {})
        return entry[1]

    async def do(self, client: Any, op: Coalesce) -> tuple[Any, bool]:
        loop = asyncio.get_running_loop()
        calls = self._calls(loop)
        key = op.key
        flight = calls.get(key)
        if flight is not None:  # a follower
            fut = flight.future
            if fut is None:
                fut = flight.future = loop.create_future()
            try:
                return await asyncio.shield(fut), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                cancelling = getattr(task, "cancelling", lambda: 0)()
                if fut.cancelled() and not cancelling:  # the leader was cancelled, not us
                    return await self.do(client, op)
                raise
        flight = calls[key] = _AsyncFlight()
        try:
            result = await run_async(client, op.make(), checked=True)  # run_async checked the loop
        except asyncio.CancelledError:
            if flight.future is not None:
                flight.future.cancel()  # followers take over rather than fail with our cancellation
            raise
        except BaseException as exc:
            if flight.future is not None:
                flight.future.set_exception(exc)
                flight.future.exception()  # retrieved: no "never retrieved" warning
            raise
        else:
            if flight.future is not None:
                flight.future.set_result(result)
            return result, True
        finally:
            del calls[key]


def flights(asyncio_: bool) -> SyncFlights | AsyncFlights:
    """A single-flight table for ``Coalesce`` ops (one per cached function)."""
    return AsyncFlights() if asyncio_ else SyncFlights()


def server_info(client: Any) -> ServerInfo:
    """The server's kind, version, mode and capabilities (one INFO, then cached)."""
    info = _infos.get(client)
    if info is None:
        if _kind_hint(client) == "fakeredis":
            info = _fake_info(client)
        else:
            try:
                info = _info_from(client, client.info("server"))
            except Exception as exc:
                public = public_error(client, exc)
                if public is None:
                    raise
                raise public from exc
        _infos[client] = info
    return info


async def server_info_async(client: Any) -> ServerInfo:
    """The asyncio twin of :func:`server_info`."""
    info = _infos.get(client)
    if info is None:
        try:
            await ensure_ready(client)
            if _kind_hint(client) == "fakeredis":
                info = _fake_info(client)
            else:
                info = _info_from(client, await client.info("server"))
        except Exception as exc:
            public = public_error(client, exc)
            if public is None:
                raise
            raise public from exc
        _infos[client] = info
    return info


# --------------------------------------------------------------------------- sync


# Scripts a batch has sent to a plain client (EVAL caches them on the server).
_loaded: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _queued(client: Any, op: Batch) -> tuple[Any, list[int] | None]:
    """A pipeline with ``op`` queued (queuing is synchronous in both runtimes), and the positions
    of the scripts sent as EVALSHA (``None``: the batch has no script).

    Scripts go as EVAL with their source (no SCRIPT EXISTS round trip first, redis-py's way),
    except in a plain client's non-transactional batch, where a script this runner already
    sent to that client goes as EVALSHA (the source of a large script costs more than its run);
    a NOSCRIPT there (a SCRIPT FLUSH, a failover) re-sends that script alone. A transaction
    stays all EVAL (nothing can be re-sent inside MULTI/EXEC), and so does a Cluster batch
    (each node caches scripts on its own). On a Cluster, a command whose keys redis-py would ask
    the server for (``_MOVABLE_KEYS``, and on redis-py 8.0's sync pipeline every script) names
    its node itself, so the batch stays one round trip.
    """
    pipe = client.pipeline(transaction=op.transaction)
    cluster = _is_cluster(client)
    queue = pipe.execute_command
    by_sha: list[int] | None = None
    loaded: set[str] | None = None
    looked = op.transaction or cluster  # look `loaded` up at the first script only
    for i, sub in enumerate(op.ops):
        if type(sub) is Command:
            a = sub.args
            if sub.options:  # (rare) redis-py's reply parsing takes them
                queue(*a, **_routed(client, sub))
                continue
        else:
            s: Script = sub  # type: ignore[assignment]  # no cast(): a call per script
            if by_sha is None:
                by_sha = []
            if not looked:
                loaded, looked = _loaded.get(client), True
            if loaded is not None and s.script.sha in loaded:
                a = ("EVALSHA", s.script.sha, len(s.keys), *s.keys, *s.args)
                by_sha.append(i)
            else:
                a = ("EVAL", s.script.source, len(s.keys), *s.keys, *s.args)
        if (
            cluster
            and sub.keys
            and (a[0] in _MOVABLE_KEYS or (type(sub) is Script and _scripts_ask_keys(client)))
        ):
            queue(*a, target_nodes=client.get_node_from_key(sub.keys[0]))
        else:
            queue(*a)
    return pipe, by_sha


def _sent(client: Any, op: Batch, replies: list[Any]) -> list[Any]:
    """After a batch with scripts: remember the scripts a plain client now holds; raise the first
    error if the batch should (it may have run with ``raise_on_error=False``)."""
    if not _is_cluster(client):
        known = _loaded.get(client)
        if known is None:
            known = _loaded[client] = set()
        known.update(sub.script.sha for sub in op.ops if type(sub) is Script)
    if op.raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def _scripts_ask_keys(client: Any) -> bool:
    """redis-py 8.0's sync cluster pipeline asks the server for a script's keys."""
    return CLUSTER_PIPELINE_ASKS_KEYS and isinstance(client, _SyncCluster)


def _batch_sync(client: Any, op: Batch) -> Any:
    pipe, by_sha = _queued(client, op)
    if not by_sha:
        replies = pipe.execute(raise_on_error=op.raise_on_error)
        return replies if by_sha is None else _sent(client, op, replies)
    replies = pipe.execute(raise_on_error=False)
    for i in by_sha:
        if isinstance(replies[i], NoScriptError):  # flushed since: this one alone (it loads it)
            try:
                replies[i] = _exec_sync(client, op.ops[i])
            except Exception as exc:
                replies[i] = exc
    return _sent(client, op, replies)


# Commands whose keys redis-py's cluster client can only learn by asking the server
# (COMMAND GETKEYS, a round trip per call). With declared keys we route them ourselves.
_MOVABLE_KEYS = frozenset({"XREAD", "XREADGROUP", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE",
                           "ZUNION", "ZINTER", "ZDIFF", "SORT", "SORT_RO", "LMPOP", "ZMPOP"})  # fmt: skip
_CLUSTERS = (_SyncCluster, _AsyncCluster)
_cluster_types: dict[type, bool] = {}


def _is_cluster(client: Any) -> bool:
    """``isinstance(client, _CLUSTERS)``, cached by type: redis-py's clients derive from a
    ``typing.Protocol``, which makes each ``isinstance`` cost about a microsecond on the hot path."""
    t = type(client)
    found = _cluster_types.get(t)
    if found is None:
        found = _cluster_types[t] = issubclass(t, _CLUSTERS)
    return found


def _routed(client: Any, cmd: Command) -> dict[str, Any]:
    """The command's ``options``, and ``target_nodes=`` for a movable-keys command with declared
    keys on a cluster client."""
    kw = dict(cmd.options) if cmd.options else {}
    if cmd.keys and cmd.args[0] in _MOVABLE_KEYS and _is_cluster(client):
        cluster: Any = client
        kw["target_nodes"] = cluster.get_node_from_key(cmd.keys[0])
    return kw


def _direct_sync(pool: Any, args: tuple[Any, ...]) -> Any:
    """Send ``args`` on one of ``pool``'s connections and return the reply as read: what redis-py's
    ``execute_command`` does for a command without a reply callback, minus its per-command
    wrapper (retry closures, timers and metrics hooks), about 7 % of a loopback round trip.
    Nothing else changes: those clients never retry in the client (the runners decide), the
    connection runs its health check and timeouts, and one that fails mid-command disconnects
    itself before it goes back to the pool, as under ``execute_command``."""
    conn = pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        if conn.should_reconnect():  # (a maintenance notice: redis-py 8.0 leaves it to the caller)
            conn.disconnect()
        pool.release(conn)


async def _direct_async(pool: Any, args: tuple[Any, ...]) -> Any:
    """The asyncio twin of :func:`_direct_sync` (a cancelled read disconnects the connection)."""
    conn = await pool.get_connection()
    try:
        await conn.send_command(*args)
        return await conn.read_response()
    finally:
        await pool.release(conn)


# EVALSHA's key count as the bytes redis-py would encode it to on every call.
_NKEYS = tuple(str(n).encode("ascii") for n in range(32))


def _exec_sync(client: Any, op: Op) -> Any:
    t = type(op)
    if t is Script:
        s: Script = op  # type: ignore[assignment]  # `type(op) is` and no cast(): the hot path
        sc, n = s.script, len(s.keys)
        nk = _NKEYS[n] if n < 32 else n
        pool = getattr(client, DIRECT, None)
        try:
            if pool is not None:
                return _direct_sync(pool, ("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args))
            return client.execute_command("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args)
        except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / failover
            client.script_load(sc.source)
            return client.execute_command("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args)
    if t is Command:
        cmd: Command = op  # type: ignore[assignment]
        if cmd.options:
            return client.execute_command(*cmd.args, **_routed(client, cmd))
        pool = getattr(client, DIRECT, None)
        if pool is not None and cmd.args[0] not in client.response_callbacks:
            return _direct_sync(pool, cmd.args)
        if cmd.keys:
            return client.execute_command(*cmd.args, **_routed(client, cmd))
        return client.execute_command(*cmd.args)
    if t is Batch:
        return _batch_sync(client, op)  # type: ignore[arg-type]  # no cast(): a call per op
    if t is ComputeEach:  # (a stream drain's every batch, with Batch and Now)
        return _each_sync(op)  # type: ignore[arg-type]
    if t is Now:
        return time.monotonic()
    if t is Coalesce:
        co: Coalesce = op  # type: ignore[assignment]
        return co.flights.do(client, co)
    if t is Sleep:
        time.sleep(cast(Sleep, op).seconds)
        return time.monotonic()
    if t is WallClock:
        return time.time()
    if t is Compute:
        c: Compute = op  # type: ignore[assignment]
        if c.timeout is not None:
            return _compute_with_timeout(c)
        result = c.fn(*c.args, **c.kwargs)
        if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(f"{c.fn!r} is async: use the asyncio API for it")
        return result
    if t is Probe:
        return server_info(client)
    if t is BlockingPop:
        target, args = _blpop_args(client, cast(BlockingPop, op))
        try:
            return target.execute_command(*args)
        except RedisTimeoutError:  # the socket gave up first: an empty block
            return None
    if t is FanOut:
        return _fanout_sync(cast(FanOut, op))
    raise TypeError(f"flow yielded {op!r}, which is not an operation")


def _retry_sync(client: Any, op: Op, exc: Exception) -> Any:
    """After ``exc`` from the first attempt: wait on a full pool, retry a read after a
    connection error (``READ_RETRIES``), else raise ``exc``."""
    attempt = 0
    full_since: float | None = None
    while True:
        if isinstance(exc, RedisPatternsError):  # from a nested runner (a Coalesce leader): final
            raise exc
        if isinstance(exc, MaxConnectionsError):
            full_since, pause = _pool_full_wait(full_since)
            time.sleep(pause)
        elif isinstance(exc, _RETRY_ON) and attempt < READ_RETRIES and getattr(op, "retryable", False):
            time.sleep(_backoff(attempt))
            attempt += 1
        else:
            raise exc
        try:
            return _exec_sync(client, op)
        except _RETRYABLE as again:
            exc = again


def _exec_sync_retrying(client: Any, op: Op) -> Any:
    try:
        return _exec_sync(client, op)
    except _RETRYABLE as exc:
        return _retry_sync(client, op, exc)


def run_sync(client: Any, flow: Flow[T]) -> T:
    """Drive ``flow`` to completion on a sync client and return its result.

    The flow sees redis-py's errors as they are; one that leaves it leaves as
    :func:`public_error` says (``ServerUnavailable`` / ``ServerError``, the original as cause).
    """
    try:
        op = next(flow)
        while True:
            try:
                try:
                    reply = _exec_sync(client, op)
                except _RETRYABLE as exc:  # the first attempt runs without the retry loop's frame
                    reply = _retry_sync(client, op, exc)
            except Exception as exc:  # thrown into the flow, which may handle it
                if type(op) is Compute:
                    _from_user(exc)
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # (no cast(): a call per flow)
    except Exception as exc:
        public = public_error(client, exc)
        if public is None:
            raise
        raise public from exc
    finally:
        flow.close()


# --------------------------------------------------------------------------- async


async def _batch_async(client: Any, op: Batch) -> Any:
    pipe, by_sha = _queued(client, op)
    if not by_sha:
        replies = await pipe.execute(raise_on_error=op.raise_on_error)
        return replies if by_sha is None else _sent(client, op, replies)
    replies = await pipe.execute(raise_on_error=False)
    for i in by_sha:
        if isinstance(replies[i], NoScriptError):
            try:
                replies[i] = await _exec_async(client, op.ops[i])
            except Exception as exc:
                replies[i] = exc
    return _sent(client, op, replies)


async def _exec_async(client: Any, op: Op) -> Any:
    t = type(op)
    if t is Script:
        s: Script = op  # type: ignore[assignment]  # as in _exec_sync
        sc, n = s.script, len(s.keys)
        nk = _NKEYS[n] if n < 32 else n
        pool = getattr(client, DIRECT, None)
        try:
            if pool is not None:
                return await _direct_async(pool, ("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args))
            return await client.execute_command("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args)
        except NoScriptError:
            await client.script_load(sc.source)
            return await client.execute_command("EVALSHA", sc.sha_arg, nk, *s.keys, *s.args)
    if t is Command:
        cmd: Command = op  # type: ignore[assignment]
        if cmd.options:
            return await client.execute_command(*cmd.args, **_routed(client, cmd))
        pool = getattr(client, DIRECT, None)
        if pool is not None and cmd.args[0] not in client.response_callbacks:
            return await _direct_async(pool, cmd.args)
        if cmd.keys:
            return await client.execute_command(*cmd.args, **_routed(client, cmd))
        return await client.execute_command(*cmd.args)
    if t is Batch:
        return await _batch_async(client, op)  # type: ignore[arg-type]
    if t is ComputeEach:  # (as in _exec_sync)
        return await _each_async(op)  # type: ignore[arg-type]
    if t is Now:
        return time.monotonic()
    if t is Coalesce:
        co: Coalesce = op  # type: ignore[assignment]
        return await co.flights.do(client, co)
    if t is Sleep:
        await asyncio.sleep(cast(Sleep, op).seconds)
        return time.monotonic()
    if t is WallClock:
        return time.time()
    if t is Compute:
        c: Compute = op  # type: ignore[assignment]
        if c.timeout is not None:
            call = c.fn(*c.args, **c.kwargs) if validate.is_async_callable(c.fn) else None
            try:
                if call is not None:
                    return await asyncio.wait_for(call, c.timeout)
                return await asyncio.wait_for(asyncio.to_thread(c.fn, *c.args, **c.kwargs), c.timeout)
            except asyncio.TimeoutError:  # distinct from the builtin before Python 3.11
                raise TimeoutError(f"{getattr(c.fn, '__qualname__', c.fn)!s} ran past {c.timeout}s") from None
        result = c.fn(*c.args, **c.kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
    if t is Probe:
        return await server_info_async(client)
    if t is BlockingPop:
        target, args = _blpop_args(client, cast(BlockingPop, op))
        try:
            return await target.execute_command(*args)
        except RedisTimeoutError:
            return None
    if t is FanOut:
        return await _fanout_async(cast(FanOut, op))
    raise TypeError(f"flow yielded {op!r}, which is not an operation")


async def _retry_async(client: Any, op: Op, exc: Exception) -> Any:
    """The asyncio twin of :func:`_retry_sync`."""
    attempt = 0
    full_since: float | None = None
    while True:
        if isinstance(exc, RedisPatternsError):
            raise exc
        if isinstance(exc, MaxConnectionsError):
            full_since, pause = _pool_full_wait(full_since)
            await asyncio.sleep(pause)
        elif isinstance(exc, _RETRY_ON) and attempt < READ_RETRIES and getattr(op, "retryable", False):
            await asyncio.sleep(_backoff(attempt))
            attempt += 1
        else:
            raise exc
        try:
            return await _exec_async(client, op)
        except _RETRYABLE as again:
            exc = again


async def ensure_ready(client: Any) -> None:
    """Initialise an asyncio cluster client once, before concurrent first calls.

    redis-py 8.1's asyncio ``RedisCluster`` races when many tasks make its first calls at once
    (the startup nodes' connections are closed under them: ``'NoneType' object has no attribute
    'writelines'`` / "Connection closed by server"); one ``initialize()`` first avoids it.
    """
    if getattr(client, "_initialize", False) is True and isinstance(client, _AsyncCluster):
        try:
            await client.initialize()
        except RedisClusterException as exc:  # no node answered: an outage, as a flow sees one
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(str(exc)) from exc


async def run_async(client: Any, flow: Flow[T], *, checked: bool = False) -> T:
    """Drive ``flow`` to completion on an asyncio client and return its result (errors as
    :func:`run_sync`'s). ``checked``: the caller already ran :func:`check_loop` for ``client``
    in this loop (a nested flow)."""
    if not checked:
        check_loop(client)  # a client whose connections belong to another loop: a clear error
    try:
        init = _is_cluster(client) and getattr(client, "_initialize", False) is True
        op = next(flow)
        while True:
            try:
                if init and type(op) is not Compute:  # in the flow: its error handling applies
                    init = False
                    await ensure_ready(client)
                try:
                    reply = await _exec_async(client, op)
                except _RETRYABLE as exc:
                    reply = await _retry_async(client, op, exc)
            except Exception as exc:
                if type(op) is Compute:
                    _from_user(exc)
                op = flow.throw(exc)
            else:
                op = flow.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # (no cast(): a call per flow)
    except Exception as exc:
        public = public_error(client, exc)
        if public is None:
            raise
        raise public from exc
    finally:
        flow.close()


# --------------------------------------------------------------------------- background loops


class SyncLoop:
    """A background flow on a daemon thread (see :func:`start_loop`)."""

    def __init__(self, client: Any, flow: Flow[Any], name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, flow), name=name, daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """True once stopped, or once its flow has returned."""
        return self._stop.is_set() or not self._thread.is_alive()

    def stop(self) -> None:
        """End the loop at its next operation; a reply that arrives after this is dropped."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self, client: Any, flow: Flow[Any]) -> None:
        stop = self._stop
        try:
            op = next(flow)
            while not stop.is_set():
                if type(op) is Sleep:
                    if stop.wait(op.seconds):
                        break
                    op = flow.send(time.monotonic())
                    continue
                try:
                    reply = _exec_sync_retrying(client, op)
                except Exception as exc:
                    if stop.is_set():
                        break
                    op = flow.throw(exc)
                else:
                    if stop.is_set():
                        break
                    op = flow.send(reply)
        except StopIteration:
            pass
        except Exception:  # a loop's own bug: report it, never kill the process
            log.exception("background loop %s failed", self._thread.name)
        finally:
            flow.close()


_running: set[asyncio.Task[Any]] = set()


class AsyncLoop:
    """A background flow on an asyncio task (see :func:`start_loop_async`)."""

    def __init__(self, client: Any, flow: Flow[Any], name: str, cancel_caller: bool) -> None:
        caller = asyncio.current_task() if cancel_caller else None
        task = asyncio.get_running_loop().create_task(self._run(client, flow, caller), name=name)
        _running.add(task)  # referenced until done, even when nobody keeps the loop object
        task.add_done_callback(_running.discard)
        self._task: asyncio.Task[None] | None = task

    @property
    def stopped(self) -> bool:
        return self._task is None or self._task.done()

    def stop(self) -> None:
        """Cancel the loop's task (unless the loop itself asks, from a callback it runs)."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run(self, client: Any, flow: Flow[Any], caller: asyncio.Task[Any] | None) -> None:
        try:
            result = await run_async(client, flow)
        except Exception:  # a loop's own bug: report it, never kill the event loop
            log.exception("background loop %s failed", asyncio.current_task())
            return
        if result and caller is not None and not caller.done():
            caller.cancel(result)


def start_loop(client: Any, flow: Flow[Any], *, name: str) -> SyncLoop:
    """Run ``flow`` in the background on a daemon thread, with the sync runner's table."""
    return SyncLoop(client, flow, name)


def start_loop_async(client: Any, flow: Flow[Any], *, name: str, cancel_caller: bool = False) -> AsyncLoop:
    """Run ``flow`` on a task of the running loop. ``cancel_caller``: when the flow returns a
    message (a lock lost), cancel the task that started the loop with it."""
    return AsyncLoop(client, flow, name, cancel_caller)


# --------------------------------------------------------------------------- write-behind queues


def _compute_with_timeout(c: Compute) -> Any:
    """Run user code in a daemon thread and wait at most ``c.timeout``: a call that overruns keeps
    running unobserved (a thread cannot be cancelled) but never holds up interpreter exit."""
    if validate.is_async_callable(c.fn):
        raise TypeError(f"{c.fn!r} is async: use the asyncio API for it")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = c.fn(*c.args, **c.kwargs)
        except BaseException as exc:  # handed to the flow below
            box["error"] = exc

    worker = threading.Thread(target=target, name="rp-compute", daemon=True)
    worker.start()
    worker.join(c.timeout)
    if worker.is_alive():
        raise TimeoutError(f"{getattr(c.fn, '__qualname__', c.fn)!s} ran past {c.timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class SyncQueues:
    """``workers`` bounded queues of flows, each drained in order by its own daemon thread.

    ``submit(i, flow)`` blocks while queue ``i`` is full (back-pressure, never a drop); a flow
    that fails is logged (``"<what> failed (dropped)"``) and dropped. Threads start with the
    first submit; ``name`` names them.
    """

    def __init__(self, client: Callable[[], Any], workers: int, capacity: int, name: str, what: str) -> None:
        self._client, self._n, self._capacity, self._name, self._what = client, workers, capacity, name, what
        self._queues: list[queue.Queue[Flow[Any] | None]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, i: int, flow: Flow[Any]) -> None:
        if not self._queues:
            self._start()
        self._queues[i].put(flow)

    def offer(self, i: int, flow: Flow[Any]) -> bool:
        """Queue ``flow`` without waiting: False (and ``flow`` closed) when queue ``i`` is full."""
        if not self._queues:
            self._start()
        try:
            self._queues[i].put_nowait(flow)
        except queue.Full:
            flow.close()
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._queues:
                return
            for i in range(self._n):
                q: queue.Queue[Flow[Any] | None] = queue.Queue(self._capacity)
                t = threading.Thread(target=self._drain, args=(q,), name=f"{self._name}-{i}", daemon=True)
                self._threads.append(t)
                t.start()
                self._queues.append(q)

    def _drain(self, q: queue.Queue[Flow[Any] | None]) -> None:
        while True:
            flow = q.get()
            try:
                if flow is None:
                    return
                run_sync(self._client(), flow)
            except Exception:
                log.exception("%s failed (dropped)", self._what)
            finally:
                q.task_done()

    def flush(self) -> None:
        """Wait until every queued flow has run."""
        for q in list(self._queues):
            q.join()

    def close(self) -> None:
        """Flush, then stop the workers (a later submit starts new ones)."""
        self.flush()
        queues, threads = self._queues, self._threads
        for q in queues:
            q.put(None)
        for t in threads:
            t.join()
        self._queues, self._threads = [], []


class AsyncQueues:
    """The asyncio twin of :class:`SyncQueues`: tasks of the running loop drain the queues."""

    def __init__(self, client: Callable[[], Any], workers: int, capacity: int, name: str, what: str) -> None:
        self._client, self._n, self._capacity, self._name, self._what = client, workers, capacity, name, what
        self._queues: list[asyncio.Queue[Flow[Any] | None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _start(self) -> None:
        if not self._queues:
            for n in range(self._n):
                q: asyncio.Queue[Flow[Any] | None] = asyncio.Queue(self._capacity)
                self._queues.append(q)
                self._tasks.append(asyncio.create_task(self._drain(q), name=f"{self._name}-{n}"))

    async def submit(self, i: int, flow: Flow[Any]) -> None:
        self._start()
        await self._queues[i].put(flow)

    def offer(self, i: int, flow: Flow[Any]) -> bool:
        """Queue ``flow`` without waiting (in a running loop): False, ``flow`` closed, when full."""
        self._start()
        try:
            self._queues[i].put_nowait(flow)
        except asyncio.QueueFull:
            flow.close()
            return False
        return True

    async def _drain(self, q: asyncio.Queue[Flow[Any] | None]) -> None:
        while True:
            flow = await q.get()
            try:
                if flow is None:
                    return
                await run_async(self._client(), flow)
            except Exception:
                log.exception("%s failed (dropped)", self._what)
            finally:
                q.task_done()

    async def flush(self) -> None:
        for q in list(self._queues):
            await q.join()

    async def close(self) -> None:
        await self.flush()
        for q in self._queues:
            await q.put(None)
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self._queues, self._tasks = [], []
