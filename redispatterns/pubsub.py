"""Pub/sub that tells the truth: numbered messages, gap reports, reconnects, bounded queues.

>>> import redispatterns as rp
>>> rp.publish("orders", {"id": 7})                      # 1 round trip (one script)
>>> with rp.Subscriber(["orders"], on_gap=print) as sub:  # subscribed when the block starts
...     for msg in sub:
...         print(msg.channel, msg.seq, msg.data)

``Subscriber`` / ``AsyncSubscriber`` (in :mod:`redispatterns.subscriber`) own their connections
and one reader per connection; messages go through a bounded queue (``maxsize``, ``overflow=``) to
the consumer: a ``for`` / ``async for`` loop, ``get()``, or a ``handler`` run in an owned thread /
task. A lost connection is resubscribed with capped backoff and reported as a :class:`Gap`; a PING
whose PONG does not come back within ``ping_timeout`` declares a half-open connection dead.
``close()`` (or leaving the ``with`` block) stops every reader and returns every connection.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._core import pubsub as core
from ._core.mount import Mount
from ._core.ops import Flow
from ._core.pubsub import Gap, Names, PubSubMessage, SubscriberOverflow
from ._runner import run_async, run_sync
from .mount import Namespace, resolve
from .subscriber import AsyncSubscriber, Subscriber, SubscriberStats

__all__ = [
    "AsyncPublisher",
    "AsyncSubscriber",
    "Gap",
    "PubSubMessage",
    "Publisher",
    "Subscriber",
    "SubscriberOverflow",
    "SubscriberStats",
    "publish",
    "publish_async",
]

MountArg = Mount | Namespace | None


# --------------------------------------------------------------------------- publishing


class _PublisherBase:
    def __init__(self, mount: MountArg, client: Any, sharded: bool, sequence: bool, asyncio_: bool) -> None:
        if not isinstance(sharded, bool) or not isinstance(sequence, bool):
            raise TypeError("sharded= and sequence= must be True or False")
        self._ns = resolve(mount, client, asyncio=asyncio_)
        self._ns.check_write("publish")
        self._names = Names(self._ns.keyspace)
        self._codec = self._ns.mount.codec
        ttl_ms = self._ns.mount.ttl_ms()
        self._ttl_arg = str(ttl_ms).encode() if ttl_ms else None
        self.sharded = sharded
        self.sequence = sequence
        # channel and counter as UTF-8 bytes (what the subscriber subscribes to), encoded once:
        # redis-py encodes a str argument on every call
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        # the client a sharded publish already went through: SPUBLISH works there, so the flow
        # skips its server probe (one runner step less per call)
        self._sharded_ok: weakref.ref[Any] | None = None

    def _flow(self, client: Any, channel: str, message: Any) -> Flow[int]:
        keys = self._keys.get(channel) if isinstance(channel, str) else None
        if keys is None:
            keys = self._names_of(channel)
        sharded = self.sharded
        probe = sharded and (self._sharded_ok is None or self._sharded_ok() is not client)
        # positional: a keyword call costs the hot path its parsing on every publish
        return core.publish(
            keys[0], keys[1], self._codec.encode(message), sharded, self.sequence, self._ttl_arg, probe
        )

    def _names_of(self, channel: str) -> tuple[bytes, bytes]:
        keys = (self._names.channel(channel).encode(), self._names.counter(channel).encode())
        if len(self._keys) >= 1024:
            self._keys.clear()
        self._keys[channel] = keys
        return keys

    def _published(self, client: Any) -> None:
        if self.sharded and (self._sharded_ok is None or self._sharded_ok() is not client):
            self._sharded_ok = weakref.ref(client)


class Publisher(_PublisherBase):
    """Publishes through the mount's codec. ``sequence=True`` numbers each message per channel
    (INCR + PUBLISH in one script, one round trip) so subscribers see exactly what they missed;
    ``sharded=True`` uses SPUBLISH (Redis/Valkey >= 7.0)."""

    def __init__(
        self, *, mount: MountArg = None, client: Any = None, sharded: bool = False, sequence: bool = True
    ) -> None:
        super().__init__(mount, client, sharded, sequence, asyncio_=False)

    def publish(self, channel: str, message: Any) -> int:
        """Publish ``message``; the number of subscribers that got it (node-local on a Cluster)."""
        client = self._ns.client
        n: int = run_sync(client, self._flow(client, channel, message))
        if self.sharded:
            self._published(client)
        return n


class AsyncPublisher(_PublisherBase):
    """The asyncio twin of :class:`Publisher`."""

    def __init__(
        self, *, mount: MountArg = None, client: Any = None, sharded: bool = False, sequence: bool = True
    ) -> None:
        super().__init__(mount, client, sharded, sequence, asyncio_=True)

    async def publish(self, channel: str, message: Any) -> int:
        """Publish ``message``; the number of subscribers that got it (node-local on a Cluster)."""
        client = self._ns.client
        n: int = await run_async(client, self._flow(client, channel, message))
        if self.sharded:
            self._published(client)
        return n


def publish(
    channel: str,
    message: Any,
    *,
    mount: MountArg = None,
    client: Any = None,
    sharded: bool = False,
    sequence: bool = True,
) -> int:
    """``Publisher(...).publish(channel, message)`` in one call."""
    return Publisher(mount=mount, client=client, sharded=sharded, sequence=sequence).publish(channel, message)


async def publish_async(
    channel: str,
    message: Any,
    *,
    mount: MountArg = None,
    client: Any = None,
    sharded: bool = False,
    sequence: bool = True,
) -> int:
    """``await AsyncPublisher(...).publish(channel, message)`` in one call."""
    pub = AsyncPublisher(mount=mount, client=client, sharded=sharded, sequence=sequence)
    return await pub.publish(channel, message)
