"""Subscribing: ``Subscriber`` / ``AsyncSubscriber`` (re-exported by :mod:`redispatterns.pubsub`).

A subscriber plans its connections (one, or on a Cluster one per shard node plus one for classic
channels and patterns) and hands them to the runners' pub/sub driver (:mod:`redispatterns._links`):
a reader per connection under the core ``LinkState``, and the bounded local queue the consumer
takes from (a ``for`` / ``async for`` loop, ``get()``, or a ``handler`` on its own thread / task).
This module holds the two flavours' lifecycles; the options, the plan and the callback flows are
``_subscriber_base.py``'s. Neither does I/O or waits.

The driver holds the subscriber only weakly: one dropped without ``close()`` is collected, and
then closed (readers stopped, connections returned) with a ``ResourceWarning``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import TracebackType

import redis.asyncio.cluster
import redis.cluster

from . import _links as driver
from ._core.pubsub import PubSubMessage, SubscriberOverflow
from ._runner import monotonic, run_async, run_sync
from ._subscriber_base import SubscriberBase, SubscriberStats

__all__ = ["AsyncSubscriber", "Subscriber", "SubscriberStats"]

_SubscriberBase = SubscriberBase  # the name otel.py reaches the gap flow by


class Subscriber(SubscriberBase):
    """Subscribes to ``channels`` / ``patterns`` of the mount; sync iterator or handler thread.

    ``sharded=True`` uses SSUBSCRIBE (Redis/Valkey >= 7.0; on a Cluster, one connection per node).
    ``handler``: called for each message in an owned thread (exceptions go to ``on_error`` and the
    thread carries on). ``on_gap(gap)``: called, in the consuming thread, for every :class:`Gap`
    (default: a logged warning). ``maxsize`` / ``overflow``: the local queue and what happens
    when it is full. ``ping_interval`` / ``ping_timeout``: after that much silence a PING goes out,
    and no PONG within the timeout means the connection is dead. ``backoff=(first, max)``: delays
    between reconnect attempts. ``start()`` waits up to ``ready_timeout`` for the subscription.
    Close it (``close()`` or ``with``); one dropped unclosed is closed when collected.
    """

    _worker: driver.Worker | None = None

    def _setup(self) -> None:
        self._start_lock = threading.Lock()

    def start(self) -> Subscriber:
        """Connect and subscribe (waits until every subscription is confirmed); idempotent."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError("this subscriber is closed; create a new one")
            if self._started:
                return self
            client = self._ns.client
            run_sync(client, self._caps_flow())
            ctl = self._plan(client, isinstance(client, redis.cluster.RedisCluster))
            self._started = True
            for link in ctl.links:
                driver.start_reader(ctl, link)
        deadline = monotonic() + self._ready_timeout
        for link in list(ctl.links):
            if not link.ready.wait(max(0.0, deadline - monotonic())):
                err = self._not_ready()
                self.close()
                raise err
        if self._handler is not None:
            self._worker = driver.spawn_worker(self, Subscriber._turn, "rp-pubsub-handler")
        return self

    def close(self) -> None:
        """Stop every thread, return every connection, drop what is still queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        links = driver.stop(self._ctl)
        me = threading.current_thread()
        for t in [*(link.thread for link in links), self._worker]:
            if t is not None and t is not me:
                t.join()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True when every connection is subscribed now (e.g. after a reconnect)."""
        return driver.wait_live(self._ctl, timeout)

    def get(self, timeout: float | None = None) -> PubSubMessage | None:
        """The next message; ``None`` after ``timeout`` seconds or once closed.

        Gaps met on the way go to ``on_gap``. Raises :class:`SubscriberOverflow` under
        ``overflow="error"`` once the queue overflowed.
        """
        if not self._started:
            self.start()
        return driver.next_message(self._ctl, self._gap_flow, timeout)

    def __iter__(self) -> Iterator[PubSubMessage]:
        while (msg := self.get()) is not None:
            yield msg

    def _turn(self, poll: float) -> bool:
        try:  # the handler worker waits for the reader (see driver.next_message)
            msg, overflow = driver.next_message(self._ctl, self._gap_flow, poll, read_here=False), None
        except SubscriberOverflow as exc:
            msg, overflow = None, exc
        return run_sync(None, self._handle_flow(msg, overflow))


class AsyncSubscriber(SubscriberBase):
    """The asyncio twin of :class:`Subscriber`: ``async with`` / ``async for`` / ``await get()``;
    ``handler`` and ``on_gap`` may be ``async def``; readers and the handler run as tasks."""

    _is_async = True
    _worker_task: asyncio.Task[None] | None = None

    async def start(self) -> AsyncSubscriber:
        """Connect and subscribe (waits until every subscription is confirmed); idempotent."""
        if self._closed:
            raise RuntimeError("this subscriber is closed; create a new one")
        if self._started:
            return self
        self._started = True
        client = self._ns.client
        self._ctl.live = live = asyncio.Event()
        await run_async(client, self._caps_flow())
        cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        if cluster:
            await client.initialize()
        ctl = self._plan(client, cluster)
        for link in ctl.links:
            driver.start_reader_async(ctl, link)
        try:
            await asyncio.wait_for(live.wait(), self._ready_timeout)
        except asyncio.TimeoutError:
            err = self._not_ready()
            await self.close()
            raise err from None
        if self._handler is not None:
            self._worker_task = driver.spawn_worker_async(self, AsyncSubscriber._turn, "rp-pubsub-handler")
        return self

    async def close(self) -> None:
        """Cancel every task, return every connection, drop what is still queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        links = driver.stop(self._ctl)
        me = asyncio.current_task()
        tasks = [
            t for t in [*(link.task for link in links), self._worker_task] if t is not None and t is not me
        ]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> AsyncSubscriber:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True when every connection is subscribed now (e.g. after a reconnect)."""
        return await driver.wait_live_async(self._ctl, timeout)

    async def get(self, timeout: float | None = None) -> PubSubMessage | None:
        """The next message; ``None`` after ``timeout`` seconds or once closed (see
        :meth:`Subscriber.get`)."""
        if not self._started:
            await self.start()
        return await driver.next_message_async(self._ctl, self._gap_flow, timeout)

    def __aiter__(self) -> AsyncSubscriber:
        return self

    async def __anext__(self) -> PubSubMessage:
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def _turn(self, poll: float) -> bool:
        try:  # the handler worker waits for the reader (see driver.next_message)
            msg, overflow = (
                await driver.next_message_async(self._ctl, self._gap_flow, poll, read_here=False),
                None,
            )
        except SubscriberOverflow as exc:
            msg, overflow = None, exc
        return await run_async(None, self._handle_flow(msg, overflow))
