"""Subscribing: ``Subscriber`` / ``AsyncSubscriber`` (re-exported by :mod:`redispatterns.pubsub`).

A subscriber plans its connections (one, or on a Cluster one per shard node plus one for classic
channels and patterns), starts a reader per connection through the runners' pub/sub driver
(:mod:`redispatterns._links`, which reads under the core ``LinkState``), and hands what the readers
deliver to the consumer through a bounded queue: a ``for`` / ``async for`` loop, ``get()``, or a
``handler`` on its own thread / task. This module does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis.asyncio.cluster
import redis.cluster

from . import _links
from ._core import pubsub as core
from ._core import validate
from ._core.mount import Mount
from ._core.ops import Compute, Flow, Probe
from ._core.pubsub import Gap, LinkState, Names, OverflowBuffer, PubSubMessage, Sub, SubscriberOverflow
from ._runner import monotonic, run_async, run_sync, wallclock
from .errors import ServerUnavailable, UnsupportedByServer
from .mount import Namespace, resolve

__all__ = ["AsyncSubscriber", "Subscriber", "SubscriberStats"]

log = logging.getLogger("redispatterns.pubsub")

MountArg = Mount | Namespace | None


# --------------------------------------------------------------------------- subscribing


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Counters of one subscriber."""

    received: int
    delivered: int
    dropped: int
    gaps: int
    reconnects: int
    queued: int


class _SubscriberBase:
    """Configuration, validation and bookkeeping shared by both flavours (no I/O)."""

    _is_async = False

    def __init__(
        self,
        channels: Iterable[str] = (),
        *,
        patterns: Iterable[str] = (),
        sharded: bool = False,
        handler: Callable[[PubSubMessage], Any] | None = None,
        on_gap: Callable[[Gap], Any] | None = None,
        on_error: Callable[[BaseException, PubSubMessage | Gap | None], Any] | None = None,
        mount: MountArg = None,
        client: Any = None,
        maxsize: int = 10_000,
        overflow: core.Overflow = "drop_oldest",
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        backoff: tuple[float, float] = (0.1, 5.0),
        ready_timeout: float = 10.0,
    ) -> None:
        if not isinstance(sharded, bool):
            raise TypeError("sharded= must be True or False")
        for name, fn in (("handler", handler), ("on_gap", on_gap), ("on_error", on_error)):
            validate.callable_or_none(fn, name)
            if fn is not None and not self._is_async and validate.is_async_callable(fn):
                raise TypeError(f"{name} is async: use AsyncSubscriber for async callbacks")
        validate.seconds(ping_timeout, "ping_timeout")
        validate.seconds(ready_timeout, "ready_timeout")
        if (
            isinstance(ping_interval, bool)
            or not isinstance(ping_interval, (int, float))
            or ping_interval < 0
        ):
            raise ValueError("ping_interval must be seconds >= 0 (0 turns the PING deadline off)")
        if (
            not isinstance(backoff, tuple)
            or len(backoff) != 2
            or not all(isinstance(b, (int, float)) and b > 0 for b in backoff)
            or backoff[0] > backoff[1]
        ):
            raise ValueError("backoff must be (first_delay, max_delay) in seconds, 0 < first <= max")
        self._ns = resolve(mount, client, asyncio=self._is_async)
        self._ns.check_read("Subscriber")
        self._names = Names(self._ns.keyspace)
        self._subs = core.plan(self._names, channels, patterns, sharded=sharded)
        self._buffer = OverflowBuffer(maxsize, overflow)
        self.sharded = sharded
        self._handler = handler
        self._on_gap = on_gap
        self._on_error = on_error
        self._ping = (float(ping_interval), float(ping_timeout))
        self._backoff = (float(backoff[0]), float(backoff[1]))
        self._ready_timeout = float(ready_timeout)
        self._links: list[_links.Link] = []
        self._started = False
        self._closed = False
        self._received = 0
        self._delivered = 0
        self._gap_count = 0
        self.gaps: collections.deque[Gap] = collections.deque(maxlen=100)
        """The last 100 gaps (newest last)."""
        self._setup()

    def _setup(self) -> None:
        """The flavour's own synchronisation state."""

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._subs if s.kind != "pattern")

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._subs if s.kind == "pattern")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            received=self._received,
            delivered=self._delivered,
            dropped=self._buffer.dropped,
            gaps=self._gap_count,
            reconnects=sum(link.state.reconnects for link in self._links),
            queued=len(self._buffer),
        )

    def _state(self, subs: tuple[Sub, ...]) -> LinkState:
        return LinkState(
            subs,
            names=self._names,
            codec=self._ns.mount.codec,
            ping_interval=self._ping[0],
            ping_timeout=self._ping[1],
            backoff=self._backoff,
            max_wait=0.5,
        )

    def _plan_links(self, client: Any, cluster: bool) -> None:
        """Standalone: one connection. Cluster: one for classic channels and patterns (any node
        hears every PUBLISH), one per node for shard channels."""
        if not cluster:
            self._links = [_links.Link(self._subs, self._state(self._subs))]
            return

        def node_of(s: Sub) -> str:
            if s.kind != "shard":
                return ""
            return str(client.get_node_from_key(s.full).name)

        groups = core.shard_groups(self._subs, node_of)
        self._links = [_links.Link(subs, self._state(subs)) for subs in groups.values()]

    def _resplit(self, link: _links.Link, client: Any) -> list[_links.Link]:
        """After a slot moved, a connection's shard channels may live on several nodes: keep the
        first node's here, and return new links for the others (started by the caller)."""
        if not link.state.attempt or len(link.subs) < 2:
            return []
        groups = list(
            core.shard_groups(link.subs, lambda s: str(client.get_node_from_key(s.full).name)).values()
        )
        if len(groups) < 2:
            return []
        new = []
        for g in groups[1:]:
            new.append(_links.Link(g, link.state.split([s for s in link.state.subs if s not in g])))
        link.subs = link.state.subs
        return new

    def _caps_flow(self) -> Flow[None]:
        """Check that the server can serve this subscriber; a subscriber that fails the check
        (or cannot even ask) is closed, in both flavours."""
        try:
            if self.sharded:
                info = yield Probe()
                if not info.has("sharded_pubsub"):
                    raise UnsupportedByServer("sharded pub/sub (SSUBSCRIBE)", str(info))
        except BaseException:
            self._closed = True
            raise

    # The callbacks, once for both flavours: user code goes through Compute (awaited when async).

    def _gap_flow(self, gap: Gap) -> Flow[None]:
        """Count and keep a gap; tell ``on_gap`` (or log it)."""
        self._gap_count += 1
        self.gaps.append(gap)
        if self._on_gap is None:
            log.warning("pub/sub gap on %s: %s", ",".join(gap.channels) or "(queue)", gap)
            return
        try:
            yield Compute(self._on_gap, (gap,))
        except Exception as exc:
            yield from self._error_flow(exc, gap)

    def _error_flow(self, exc: BaseException, item: PubSubMessage | Gap | None) -> Flow[None]:
        """Tell ``on_error`` (or log it); an ``on_error`` that fails is ignored."""
        if self._on_error is None:
            log.error("pub/sub callback failed on %r", item, exc_info=exc)
            return
        with contextlib.suppress(Exception):
            yield Compute(self._on_error, (exc, item))

    def _handle_flow(self, msg: PubSubMessage | None, overflow: SubscriberOverflow | None) -> Flow[bool]:
        """One turn of the handler worker: False when it should stop (closed, or overflowed)."""
        if overflow is not None:
            yield from self._error_flow(overflow, None)
            return False
        if msg is None:
            return False
        assert self._handler is not None
        try:
            yield Compute(self._handler, (msg,))
        except Exception as exc:
            yield from self._error_flow(exc, msg)
        return True

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "new")
        return f"<{type(self).__name__} {list(self.channels) + list(self.patterns)} {state}>"


# --------------------------------------------------------------------------- sync


class Subscriber(_SubscriberBase):
    """Subscribes to ``channels`` / ``patterns`` of the mount; sync iterator or handler thread.

    ``sharded=True`` uses SSUBSCRIBE (Redis/Valkey >= 7.0; on a Cluster, one connection per node).
    ``handler``: called for each message in an owned thread (exceptions go to ``on_error`` and the
    thread carries on). ``on_gap(gap)``: called, in the consuming thread, for every :class:`Gap`
    (default: a logged warning). ``maxsize`` / ``overflow``: the local queue and what happens
    when it is full. ``ping_interval`` / ``ping_timeout``: after that much silence a PING goes out,
    and no PONG within the timeout means the connection is dead. ``backoff=(first, max)``: delays
    between reconnect attempts. ``start()`` waits up to ``ready_timeout`` for the subscription.
    """

    def _setup(self) -> None:
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._worker: Any = None  # the handler thread, from _links.spawn
        self._start_lock = threading.Lock()

    # -- lifecycle

    def start(self) -> Subscriber:
        """Connect and subscribe (waits until every subscription is confirmed); idempotent."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError("this subscriber is closed; create a new one")
            if self._started:
                return self
            client = self._ns.client
            self._client = client
            run_sync(client, self._caps_flow())
            cluster = isinstance(client, redis.cluster.RedisCluster)
            self._plan_links(client, cluster)
            self._started = True
            for link in self._links:
                _links.start_reader(self, link, cluster)
        deadline = monotonic() + self._ready_timeout
        for link in self._links:
            if not link.ready.wait(max(0.0, deadline - monotonic())):
                err = link.state.lost_reason
                self.close()
                raise ServerUnavailable(f"pub/sub subscription not confirmed in {self._ready_timeout}s {err}")
        if self._handler is not None:
            self._worker = _links.spawn(self._work, "rp-pubsub-handler")
        return self

    def close(self) -> None:
        """Stop every thread, return every connection, drop what is still queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        with self._start_lock:  # readers add links (after a resharding) under this lock
            links = list(self._links)
        for link in links:
            _links.shutdown(link.conn)
        with self._cond:
            self._cond.notify_all()
        me = threading.current_thread()
        for t in [*(link.thread for link in links), self._worker]:
            if t is not None and t is not me:
                t.join()
        with self._cond:
            self._buffer.clear()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True when every connection is subscribed now (e.g. after a reconnect)."""
        return _links.wait_live(self._links, lambda: self._closed, timeout)

    # -- consuming

    def get(self, timeout: float | None = None) -> PubSubMessage | None:
        """The next message; ``None`` after ``timeout`` seconds or once closed.

        Gaps met on the way go to ``on_gap``. Raises :class:`SubscriberOverflow` under
        ``overflow="error"`` once the queue overflowed.
        """
        if not self._started:
            self.start()
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            with self._cond:
                while True:
                    item = self._buffer.take(wallclock())
                    if item is not None:
                        self._cond.notify_all()
                        break
                    if self._closed:
                        return None
                    left = None if deadline is None else deadline - monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(left)
            if isinstance(item, Gap):
                run_sync(None, self._gap_flow(item))
                continue
            self._delivered += 1
            return item

    def __iter__(self) -> Iterator[PubSubMessage]:
        while True:
            msg = self.get()
            if msg is None:
                return
            yield msg

    def _work(self) -> None:
        while True:
            try:
                msg, overflow = self.get(), None
            except SubscriberOverflow as exc:
                msg, overflow = None, exc
            if not run_sync(None, self._handle_flow(msg, overflow)):
                return

    # -- reading

    def _put(self, item: PubSubMessage | Gap) -> None:
        with self._cond:
            while not self._buffer.put(item, wallclock()):
                if self._stopping.is_set():
                    return
                self._cond.wait(0.1)
            if isinstance(item, PubSubMessage):
                self._received += 1
            if self._buffer.failed:
                self._stopping.set()
            self._cond.notify_all()


# --------------------------------------------------------------------------- asyncio


class AsyncSubscriber(_SubscriberBase):
    """The asyncio twin of :class:`Subscriber`: ``async with`` / ``async for`` / ``await get()``;
    ``handler`` and ``on_gap`` may be ``async def``; readers and the handler run as tasks."""

    _is_async = True

    def _setup(self) -> None:
        self._stopping = False
        self._changed: asyncio.Event | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._live: asyncio.Event | None = None

    # -- lifecycle

    async def start(self) -> AsyncSubscriber:
        """Connect and subscribe (waits until every subscription is confirmed); idempotent."""
        if self._closed:
            raise RuntimeError("this subscriber is closed; create a new one")
        if self._started:
            return self
        self._started = True
        client = self._ns.client
        self._client = client
        self._changed = asyncio.Event()
        self._live = asyncio.Event()
        await run_async(client, self._caps_flow())
        cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        if cluster:
            await client.initialize()
        self._plan_links(client, cluster)
        for link in self._links:
            _links.start_reader_async(self, link, cluster)
        try:
            await asyncio.wait_for(self._all_ready(), self._ready_timeout)
        except asyncio.TimeoutError:
            err = " ".join(link.state.lost_reason for link in self._links)
            await self.close()
            raise ServerUnavailable(
                f"pub/sub subscription not confirmed in {self._ready_timeout}s {err}"
            ) from None
        if self._handler is not None:
            self._worker_task = _links.spawn_async(self._work(), "rp-pubsub-handler")
        return self

    async def _all_ready(self) -> None:
        assert self._live is not None
        await self._live.wait()

    async def close(self) -> None:
        """Cancel every task, return every connection, drop what is still queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        if self._changed is not None:
            self._changed.set()
        me = asyncio.current_task()
        tasks = [
            t
            for t in [*(link.task for link in self._links), self._worker_task]
            if t is not None and t is not me
        ]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._buffer.clear()

    async def __aenter__(self) -> AsyncSubscriber:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True when every connection is subscribed now (e.g. after a reconnect)."""
        return await _links.wait_live_async(self._links, lambda: self._closed, timeout)

    # -- consuming

    async def get(self, timeout: float | None = None) -> PubSubMessage | None:
        """The next message; ``None`` after ``timeout`` seconds or once closed (see
        :meth:`Subscriber.get`)."""
        if not self._started:
            await self.start()
        assert self._changed is not None
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            item = self._buffer.take(wallclock())
            if item is None:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - monotonic()
                if left is not None and left <= 0:
                    return None
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
                continue
            self._changed.set()
            if isinstance(item, Gap):
                await run_async(None, self._gap_flow(item))
                continue
            self._delivered += 1
            return item

    def __aiter__(self) -> AsyncSubscriber:
        return self

    async def __anext__(self) -> PubSubMessage:
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def _work(self) -> None:
        while True:
            try:
                msg, overflow = await self.get(), None
            except SubscriberOverflow as exc:
                msg, overflow = None, exc
            if not await run_async(None, self._handle_flow(msg, overflow)):
                return

    # -- reading

    async def _put(self, item: PubSubMessage | Gap) -> None:
        assert self._changed is not None
        while not self._buffer.put(item, wallclock()):
            if self._stopping:
                return
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.1)
        if isinstance(item, PubSubMessage):
            self._received += 1
        if self._buffer.failed:
            self._stopping = True
        self._changed.set()
