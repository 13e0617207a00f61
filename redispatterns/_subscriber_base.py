"""What both subscriber flavours share: options and their checks, the connection plan, the
counters and the callback flows (``on_gap``, ``on_error``, the handler). No I/O and no waiting:
the runners' pub/sub driver (:mod:`redispatterns._links`) does both; ``subscriber.py`` holds the
two flavours' lifecycles."""

from __future__ import annotations

import collections
import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import _links as driver
from ._core import pubsub as core
from ._core import validate
from ._core.mount import Mount
from ._core.ops import Compute, Flow, Probe
from ._core.pubsub import Gap, LinkState, Names, OverflowBuffer, PubSubMessage, Sub, SubscriberOverflow
from .errors import ServerUnavailable, UnsupportedByServer
from .mount import Namespace, resolve

__all__ = ["Handler", "MountArg", "OnError", "OnGap", "SubscriberBase", "SubscriberStats"]

log = logging.getLogger("redispatterns.pubsub")

MountArg = Mount | Namespace | None
Handler = Callable[[PubSubMessage], Any]
OnGap = Callable[[Gap], Any]
OnError = Callable[[BaseException, "PubSubMessage | Gap | None"], Any]


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Counters of one subscriber."""

    received: int
    delivered: int
    dropped: int
    gaps: int
    reconnects: int
    queued: int


def _check_timing(
    ping_interval: float, ping_timeout: float, backoff: tuple[float, float], ready: float
) -> None:
    validate.seconds(ping_timeout, "ping_timeout")
    validate.seconds(ready, "ready_timeout")
    if isinstance(ping_interval, bool) or not isinstance(ping_interval, (int, float)) or ping_interval < 0:
        raise ValueError("ping_interval must be seconds >= 0 (0 turns the PING deadline off)")
    if (
        not isinstance(backoff, tuple)
        or len(backoff) != 2
        or not all(isinstance(b, (int, float)) and b > 0 for b in backoff)
        or backoff[0] > backoff[1]
    ):
        raise ValueError("backoff must be (first_delay, max_delay) in seconds, 0 < first <= max")


class SubscriberBase:
    """Configuration, validation, planning and the callback flows of both flavours (no I/O)."""

    _is_async = False
    _ctl: driver.Control  # set last in __init__ (so __del__ of a half-built one does nothing)

    def __init__(
        self,
        channels: Iterable[str] = (),
        *,
        patterns: Iterable[str] = (),
        sharded: bool = False,
        handler: Handler | None = None,
        on_gap: OnGap | None = None,
        on_error: OnError | None = None,
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
        _check_timing(ping_interval, ping_timeout, backoff, ready_timeout)
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
        self._started = False
        self._closed = False
        self._gap_count = 0
        self.gaps: collections.deque[Gap] = collections.deque(maxlen=100)
        """The last 100 gaps (newest last)."""
        self._setup()
        inbox = driver.AsyncInbox(self._buffer) if self._is_async else driver.Inbox(self._buffer)
        self._ctl = driver.Control(inbox)

    def _setup(self) -> None:
        """The flavour's own state."""

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
    def _links(self) -> list[driver.Link]:
        return self._ctl.links

    @property
    def stats(self) -> SubscriberStats:
        inbox = self._ctl.inbox
        return SubscriberStats(
            received=inbox.received,
            delivered=inbox.delivered,
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

    def _plan(self, client: Any, cluster: bool) -> driver.Control:
        """Standalone: one connection. Cluster: one for classic channels and patterns (any node
        hears every PUBLISH), one per node for shard channels."""
        ctl = self._ctl
        ctl.client, ctl.cluster = client, cluster
        if not cluster:
            ctl.links[:] = [driver.Link(self._subs, self._state(self._subs))]
        else:
            groups = core.shard_groups(
                self._subs, lambda s: str(client.get_node_from_key(s.full).name) if s.kind == "shard" else ""
            )
            ctl.links[:] = [driver.Link(subs, self._state(subs)) for subs in groups.values()]
        return ctl

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

    def _not_ready(self) -> ServerUnavailable:
        errs = "; ".join(link.state.last_error for link in self._links if link.state.last_error)
        why = f" (last error: {errs})" if errs else ""
        return ServerUnavailable(f"pub/sub subscription not confirmed in {self._ready_timeout}s{why}")

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
            return not self._closed  # nothing within the worker's poll: go on until closed
        assert self._handler is not None
        try:
            yield Compute(self._handler, (msg,))
        except Exception as exc:
            yield from self._error_flow(exc, msg)
        return True

    def __del__(self) -> None:
        ctl: driver.Control | None = getattr(self, "_ctl", None)
        if ctl is None or not self._started or self._closed:
            return
        self._closed = True
        try:
            warnings.warn(f"unclosed {self!r}: closed when collected", ResourceWarning, stacklevel=1)
        finally:  # even when warnings are errors; at interpreter exit modules may be half gone
            with contextlib.suppress(Exception):
                driver.stop(ctl)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "new")
        return f"<{type(self).__name__} {list(self.channels) + list(self.patterns)} {state}>"
