"""Pub/sub, pure: names, the message envelope, the publish flow, and the subscriber's decisions.

Nothing here touches a socket or a clock; the runners' pub/sub driver (``redispatterns/_links.py``)
owns the threads, tasks and connections and asks this module what to do next.

* **Names.** A channel ``orders`` of a mount with prefix ``app:`` is ``app:pubsub:{orders}``; its
  sequence counter is ``app:pubsub:{orders}:seq`` (same hash tag, so one script may INCR the counter
  and (S)PUBLISH the message, on a Cluster too). Patterns match inside the braces only.
* **Envelope.** A numbered message is ``#rp1:<seq>:<payload>`` (JSON never starts with ``#``);
  ``<payload>`` is the mount codec's bytes. A message without the envelope (published by another
  client) is delivered with ``seq=None``.
* **LinkState.** The protocol state of one subscriber connection: which SUBSCRIBE commands to send,
  what a reply means (message, confirmation, PONG, an unsubscription the server forced), when to
  PING and when a missing PONG declares the connection dead, the capped backoff between
  reconnects, and the gaps: a ``disconnect`` gap when a lost connection is resubscribed, and a
  ``sequence`` gap with the exact missed numbers when a channel's next number jumps.
* **OverflowBuffer.** The bounded queue between the reader and the consumer, with a declared
  policy when it is full: ``drop_oldest``, ``drop_newest``, ``block`` or ``error``.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Union

from ..errors import RedisPatternsError, SubscriberOverflow, UnsupportedByServer
from .codec import Codec, as_bytes
from .keys import Keyspace, glob_escape, slot
from .ops import Command, Flow, KeyT, Probe, trusted_script
from .scripts import load

__all__ = [
    "ENVELOPE",
    "OVERFLOW_POLICIES",
    "Gap",
    "LinkAction",
    "LinkBroken",
    "LinkState",
    "PubSubMessage",
    "Names",
    "OverflowBuffer",
    "Overflow",
    "Sub",
    "SubscriberOverflow",
    "backoff_delay",
    "decode_payload",
    "encode_plain",
    "publish",
    "shard_groups",
    "split_envelope",
]

ENVELOPE = b"#rp1:"
# INCR + (S)PUBLISH of '#rp1:<seq>:<payload>'; their sources write ENVELOPE (a test checks they agree)
_PUBLISH = load("pubsub_publish")
_SPUBLISH = load("pubsub_spublish")
SEQ_SUFFIX = ":seq"  # counter = channel + SEQ_SUFFIX: the scripts find the channel by cutting it off
KIND = "pubsub"
Overflow = Literal["drop_oldest", "drop_newest", "block", "error"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_oldest", "drop_newest", "block", "error")
GapReason = Literal["disconnect", "sequence", "overflow"]


class LinkAction(str, enum.Enum):
    """What :meth:`LinkState.tick` asks of the driver (a ``str``: ``LinkAction.PING == "ping"``)."""

    PING = "ping"
    """send ``PING PING_TOKEN``: the connection has been silent for ``ping_interval``"""
    DEAD = "dead"
    """drop the connection: its PONG is overdue (a half-open connection)"""

    def __repr__(self) -> str:
        return f"LinkAction.{self.name}"

    __str__ = str.__str__


class LinkBroken(RedisPatternsError):
    """A subscriber connection must be replaced (no PONG in time, or a forced unsubscription)."""


# --------------------------------------------------------------------------- names


_FORBIDDEN = frozenset("{}\r\n")


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a {what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"a {what} cannot be empty")
    bad = _FORBIDDEN.intersection(name)
    if bad:
        raise ValueError(
            f"{what} {name!r} contains {''.join(sorted(bad))!r}: braces are reserved for the hash "
            "tag that keeps a channel and its counter in one Cluster slot"
        )
    return name


@dataclass(frozen=True, slots=True)
class Names:
    """Channel, counter and pattern names of one namespace (``keyspace``)."""

    keyspace: Keyspace

    @property
    def _head(self) -> str:
        return f"{self.keyspace.prefix}{KIND}:{{"

    def channel(self, name: str) -> str:
        """The Redis channel of the user's channel ``name``."""
        return self.keyspace.tagged(KIND, _check_name("channel name", name))

    def counter(self, name: str) -> str:
        """The sequence counter key of channel ``name``: the channel + ``:seq`` (same slot)."""
        return self.channel(name) + SEQ_SUFFIX

    def pattern(self, pattern: str) -> str:
        """A PSUBSCRIBE pattern: the user's glob applies to channel names of this namespace only."""
        return glob_escape(self._head) + _check_name("pattern", pattern) + glob_escape("}")

    def name_of(self, full: bytes | str) -> str:
        """The user's channel name of a Redis channel (the full name when it is not ours)."""
        text = full.decode("utf-8", "surrogateescape") if isinstance(full, bytes) else full
        head = self._head
        if text.startswith(head) and text.endswith("}"):
            return text[len(head) : -1]
        return text


# --------------------------------------------------------------------------- envelope


def encode_plain(codec: Codec, message: Any) -> bytes:
    """A message's payload through the codec (``TypeError`` when it cannot be encoded)."""
    return codec.encode(message)


def split_envelope(raw: bytes) -> tuple[int | None, bytes]:
    """``(seq, payload)`` of a numbered message; ``(None, raw)`` when it carries no envelope."""
    if not raw.startswith(ENVELOPE):
        return None, raw
    end = raw.find(b":", len(ENVELOPE))
    digits = raw[len(ENVELOPE) : end] if end > 0 else b""
    if not digits.isdigit():
        return None, raw
    return int(digits), raw[end + 1 :]


def decode_payload(codec: Codec, payload: bytes) -> Any:
    """The codec's value; the raw bytes when the payload does not decode (another publisher)."""
    try:
        return codec.decode(payload)
    except Exception:
        return payload


# --------------------------------------------------------------------------- publish


def publish(
    channel: KeyT,
    counter: KeyT,
    payload: bytes,
    sharded: bool = False,
    sequence: bool = True,
    ttl_ms: int | bytes | None = None,
    probe: bool = True,
) -> Flow[int]:
    """Publish ``payload`` (already encoded) on ``channel``; the reply is the receivers count.

    With ``sequence`` the message is numbered by INCR on ``counter`` in the same script as the
    (S)PUBLISH, so subscribers can tell exactly which numbers they missed. ``counter`` must be
    ``channel + SEQ_SUFFIX`` (:meth:`Names.counter`): the script takes the channel from it, so
    the hot call sends the counter and the payload only (and a TTL if any: each redis-py
    argument costs the caller ~0.5 µs). Names and TTL given as ``bytes`` (encoded once by the
    caller) spare redis-py encoding them on every call. ``probe=False``: the caller knows the
    server has sharded pub/sub (a sharded publish went through). The publishers call it with
    positional arguments (no keyword parsing per call).
    """
    if sharded and probe:
        info = yield Probe()
        if not info.has("sharded_pubsub"):
            raise UnsupportedByServer("sharded pub/sub (SPUBLISH)", str(info))
    if sequence:  # one key cannot cross slots: no slot check
        args = (payload, ttl_ms) if ttl_ms else (payload,)
        return int((yield trusted_script(_SPUBLISH if sharded else _PUBLISH, (counter,), args)))
    if sharded:
        n = yield Command("SPUBLISH", channel, payload, keys=(channel,), retryable=False)
    else:
        n = yield Command("PUBLISH", channel, payload, retryable=False)
    return int(n)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    """One delivered message.

    ``channel`` is the user's channel name (the mount prefix stripped); ``data`` the decoded value
    (the raw bytes when it does not decode); ``seq`` its number on the channel (``None`` when
    published without one); ``pattern`` the user's pattern that matched, if any.
    """

    channel: str
    data: Any
    seq: int | None = None
    pattern: str | None = None
    sharded: bool = False
    raw: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages may have been (``disconnect``) or were (``sequence``, ``overflow``) lost.

    * ``disconnect``: the connection was lost at ``since`` and resubscribed at ``until`` (wall
      clock, seconds); anything published in between on ``channels`` never reached us.
    * ``sequence``: channel ``channels[0]`` jumped; numbers ``first_missing..last_missing``
      (``missed`` of them) never arrived.
    * ``overflow``: the local queue was full and the policy dropped ``missed`` messages.
    """

    reason: GapReason
    channels: tuple[str, ...]
    since: float
    until: float
    missed: int | None = None
    first_missing: int | None = None
    last_missing: int | None = None
    error: str = ""


Event = Union[PubSubMessage, Gap]

# One message is built per delivery, on the reader's hot path: filling the slots through their
# descriptors builds the same frozen object as PubSubMessage(...) in about 60 % of the time
# (the dataclass __init__ goes through object.__setattr__ by name, six times).
_MESSAGE_SLOTS = tuple(getattr(PubSubMessage, f.name).__set__ for f in fields(PubSubMessage))


def _new_message(
    channel: str, data: Any, seq: int | None, pattern: str | None, sharded: bool, raw: bytes
) -> PubSubMessage:
    msg: PubSubMessage = object.__new__(PubSubMessage)
    s_channel, s_data, s_seq, s_pattern, s_sharded, s_raw = _MESSAGE_SLOTS
    s_channel(msg, channel)
    s_data(msg, data)
    s_seq(msg, seq)
    s_pattern(msg, pattern)
    s_sharded(msg, sharded)
    s_raw(msg, raw)
    return msg


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class Sub:
    """One subscription: ``kind`` is ``"channel"``, ``"pattern"`` or ``"shard"``."""

    kind: Literal["channel", "pattern", "shard"]
    name: str  # the user's name or pattern
    full: bytes  # the Redis channel or pattern

    @property
    def slot(self) -> int:
        return slot(self.full)


def plan(names: Names, channels: Iterable[str], patterns: Iterable[str], *, sharded: bool) -> tuple[Sub, ...]:
    """Validate the user's channels and patterns and turn them into subscriptions."""
    if isinstance(channels, (str, bytes)):
        raise TypeError("channels must be a list of names, e.g. channels=['orders']")
    if isinstance(patterns, (str, bytes)):
        raise TypeError("patterns must be a list of globs, e.g. patterns=['orders.*']")
    chans = list(dict.fromkeys(channels))
    pats = list(dict.fromkeys(patterns))
    if sharded and pats:
        raise ValueError("sharded pub/sub has no pattern subscriptions: use sharded=False for patterns")
    if not chans and not pats:
        raise ValueError("subscribe to at least one channel or pattern")
    kind: Literal["channel", "shard"] = "shard" if sharded else "channel"
    subs = [Sub(kind, c, names.channel(c).encode()) for c in chans]
    subs += [Sub("pattern", p, names.pattern(p).encode()) for p in pats]
    return tuple(subs)


def shard_groups(subs: Sequence[Sub], node_of: Callable[[Sub], str]) -> dict[str, tuple[Sub, ...]]:
    """Subscriptions grouped by the node that serves them (classic ones all go to one link)."""
    groups: dict[str, list[Sub]] = {}
    for s in subs:
        groups.setdefault(node_of(s), []).append(s)
    return {k: tuple(v) for k, v in groups.items()}


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Capped exponential backoff with equal jitter: in ``[d/2, d]``, ``d = min(cap, base*2**n)``.

    ``attempt`` counts consecutive failures (1 for the first); ``rand`` is uniform in [0, 1).
    The first retry after a lost connection waits about ``base``.
    """
    if attempt <= 0:
        return 0.0
    d = min(cap, base * float(2 ** min(attempt - 1, 30)))
    return d / 2 + d / 2 * rand


_CONFIRM = {b"subscribe": "channel", b"psubscribe": "pattern", b"ssubscribe": "shard"}
_UNSUB = {b"unsubscribe": "channel", b"punsubscribe": "pattern", b"sunsubscribe": "shard"}
PING_TOKEN = b"rp-pubsub-ping"


class LinkState:
    """The decisions of one subscriber connection (a *link*); the driver does the I/O.

    Driver loop (``_links.py``): ``commands = st.connecting(now)`` after connecting, send them;
    then repeatedly ``act = st.tick(now)`` (``LinkAction.PING``: send ``PING PING_TOKEN``;
    ``LinkAction.DEAD``: drop the connection), read a reply for at most ``st.wait_time(now)``
    seconds and pass it to ``st.on_reply(reply, now, wall)``, which returns the events to queue.
    On any connection error: ``delay = st.on_lost(error, now, wall, rand)``, wait, reconnect.
    """

    def __init__(
        self,
        subs: Sequence[Sub],
        *,
        names: Names,
        codec: Codec,
        ping_interval: float,
        ping_timeout: float,
        backoff: tuple[float, float],
        max_wait: float = 1.0,
    ) -> None:
        self.subs = tuple(subs)
        self.names = names
        self.codec = codec
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.backoff = backoff
        self.max_wait = max_wait
        self._by_full = {(s.kind, s.full): s for s in self.subs}
        self._chan_names = {s.full: s.name for s in self.subs if s.kind != "pattern"}
        self._pending: set[tuple[str, bytes]] = set()
        self.live = False
        self.ever_live = False
        self.attempt = 0
        self.reconnects = 0
        self.lost_at: float | None = None  # wall clock of the first loss not yet resubscribed
        self.lost_reason = ""
        self.last_error = ""  # the latest failure, live or not (a subscription never confirmed)
        self.last_rx = 0.0
        self.ping_sent_at: float | None = None
        self._seq: dict[tuple[str | None, str], int] = {}

    # -- connection lifecycle

    def connecting(self, now: float) -> list[tuple[bytes, ...]]:
        """The commands that (re)subscribe everything: one per kind, one per slot for shards."""
        self.live = False
        self.last_rx = now
        self.ping_sent_at = None
        self._pending = {(s.kind, s.full) for s in self.subs}
        cmds: list[tuple[bytes, ...]] = []
        chans = [s.full for s in self.subs if s.kind == "channel"]
        pats = [s.full for s in self.subs if s.kind == "pattern"]
        if chans:
            cmds.append((b"SUBSCRIBE", *chans))
        if pats:
            cmds.append((b"PSUBSCRIBE", *pats))
        by_slot: dict[int, list[bytes]] = {}
        for s in self.subs:
            if s.kind == "shard":
                by_slot.setdefault(s.slot, []).append(s.full)
        for _, group in sorted(by_slot.items()):  # a multi-slot SSUBSCRIBE is a CROSSSLOT error
            cmds.append((b"SSUBSCRIBE", *group))
        return cmds

    def split(self, keep: Sequence[Sub]) -> LinkState:
        """Keep only ``keep`` here; return a state for the rest (channels that moved elsewhere).

        The new state inherits the loss being recovered and the channels' last numbers, so the
        gap is still reported, by whichever connection now serves the channel.
        """
        kept = tuple(keep)
        moved = tuple(s for s in self.subs if s not in kept)
        if not kept or not moved or any(s not in self.subs for s in kept):
            raise ValueError("split needs a proper, non-empty subset of the subscriptions")
        other = LinkState(
            moved,
            names=self.names,
            codec=self.codec,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            backoff=self.backoff,
            max_wait=self.max_wait,
        )
        other.ever_live, other.lost_at, other.lost_reason = self.ever_live, self.lost_at, self.lost_reason
        other.last_error = self.last_error
        names = {s.name for s in moved}
        other._seq = {k: v for k, v in self._seq.items() if k[1] in names}
        self.subs = kept
        self._by_full = {(s.kind, s.full): s for s in kept}
        self._chan_names = {s.full: s.name for s in kept if s.kind != "pattern"}
        return other

    def on_lost(self, error: str, now: float, wall: float, rand: float) -> float:
        """The connection failed: remember when, and return how long to wait before retrying."""
        if self.live or (self.ever_live and self.lost_at is None):
            self.lost_at = wall
            self.lost_reason = error
        self.last_error = error
        self.live = False
        self.attempt += 1
        return backoff_delay(self.attempt, self.backoff[0], self.backoff[1], rand)

    # -- timing

    def tick(self, now: float) -> LinkAction | None:
        """``LinkAction.PING`` after ``ping_interval`` of silence; ``LinkAction.DEAD`` when its
        PONG is overdue; ``None``: nothing to do."""
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at >= self.ping_timeout:
                return LinkAction.DEAD
            return None
        if self.ping_interval > 0 and now - self.last_rx >= self.ping_interval:
            self.ping_sent_at = now
            return LinkAction.PING
        return None

    def wait_time(self, now: float) -> float:
        """How long the shell may block reading before it must call :meth:`tick` again."""
        if self.ping_sent_at is not None:
            left = self.ping_sent_at + self.ping_timeout - now
        elif self.ping_interval > 0:
            left = self.last_rx + self.ping_interval - now
        else:
            left = self.max_wait
        return max(0.0, min(self.max_wait, left))

    # -- replies

    def on_reply(self, reply: Any, now: float, wall: float) -> list[Event]:
        """Interpret one reply; return the events (gaps and messages) it produces.

        ``None`` (a read that timed out) is not traffic and changes nothing.
        """
        if reply is None:
            return []
        self.last_rx = now
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":  # the hot path
            # (a list, or hiredis's push-notification subclass of it in asyncio)
            chan, raw = reply[1], reply[2]
            if chan.__class__ is bytes and raw.__class__ is bytes:
                return self._message(chan, raw, None, False, wall)
        if isinstance(reply, (bytes, str)):  # PONG outside subscribed mode (fakeredis)
            if as_bytes(reply) == PING_TOKEN:
                self.ping_sent_at = None
            return []
        if not isinstance(reply, (list, tuple)) or not reply:
            return []
        kind = as_bytes(reply[0]).lower()
        if kind == b"message" and len(reply) >= 3:
            return self._message(as_bytes(reply[1]), as_bytes(reply[2]), None, False, wall)
        if kind == b"smessage" and len(reply) >= 3:
            return self._message(as_bytes(reply[1]), as_bytes(reply[2]), None, True, wall)
        if kind == b"pmessage" and len(reply) >= 4:
            pat = self.names.name_of(as_bytes(reply[1]))
            # the pattern as the user wrote it (the glob between the braces as a fallback)
            user_pat = next((s.name for s in self.subs if s.full == as_bytes(reply[1])), pat)
            return self._message(as_bytes(reply[2]), as_bytes(reply[3]), user_pat, False, wall)
        if kind == b"pong":
            self.ping_sent_at = None
            return []
        if kind in _CONFIRM and len(reply) >= 2:
            self._pending.discard((_CONFIRM[kind], as_bytes(reply[1])))
            if not self._pending and not self.live:
                return self._became_live(wall)
            return []
        if kind in _UNSUB and len(reply) >= 2:
            key = (_UNSUB[kind], as_bytes(reply[1]))
            if key in self._by_full:  # we never unsubscribe: the server did (slot moved)
                raise LinkBroken(f"the server ended the subscription to {as_bytes(reply[1])!r}")
        return []

    def _became_live(self, wall: float) -> list[Event]:
        self.live = True
        self.attempt = 0
        events: list[Event] = []
        if self.ever_live:
            self.reconnects += 1
        if self.lost_at is not None:
            events.append(
                Gap(
                    "disconnect",
                    tuple(s.name for s in self.subs),
                    since=self.lost_at,
                    until=wall,
                    error=self.lost_reason,
                )
            )
            self.lost_at = None
        self.ever_live = True
        return events

    def _message(
        self, chan: bytes, raw: bytes, pattern: str | None, sharded: bool, wall: float
    ) -> list[Event]:
        name = self._chan_names.get(chan) if pattern is None else None
        if name is None:
            name = self.names.name_of(chan)
        seq, payload = split_envelope(raw)
        events: list[Event] = []
        if seq is not None:
            key = (pattern, name)
            last = self._seq.get(key)
            self._seq[key] = seq
            if last is not None:
                # a number at or below the last one means the counter restarted (expired, flushed)
                first = last + 1 if seq > last else 1
                if seq > first:
                    events.append(
                        Gap(
                            "sequence",
                            (name,),
                            since=wall,
                            until=wall,
                            missed=seq - first,
                            first_missing=first,
                            last_missing=seq - 1,
                        )
                    )
        data = decode_payload(self.codec, payload)
        events.append(_new_message(name, data, seq, pattern, sharded, raw))
        return events


# --------------------------------------------------------------------------- the bounded queue


class OverflowBuffer:
    """The bounded queue between reader and consumer; not thread-safe (the shells lock it).

    Gaps are never dropped (they are few: one per reconnect). When messages are dropped, the next
    :meth:`take` first returns one ``overflow`` :class:`Gap` counting them.
    """

    def __init__(self, maxsize: int, policy: str) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError("maxsize must be an int")
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; got {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self._items: collections.deque[Event] = collections.deque()
        self._messages = 0
        self.dropped = 0
        self._unreported = 0
        self._drop_since = 0.0
        self.failed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def idle(self) -> bool:
        """True when :meth:`take` would return ``None`` (nothing queued, nothing to report)."""
        return not self._items and not self._unreported and not self.failed

    def put(self, item: Event, wall: float) -> bool:
        """Queue ``item``; ``False`` means "full, wait and offer it again" (``block`` policy).

        Under ``error`` a full queue sets :attr:`failed` and the item is dropped.
        """
        if isinstance(item, Gap) or self._messages < self.maxsize:
            self._append(item)
            return True
        if self.policy == "block":
            return False
        if self.policy == "error":
            self.failed = True
            return True
        if self._unreported == 0:
            self._drop_since = wall
        self.dropped += 1
        self._unreported += 1
        if self.policy == "drop_oldest":
            for i, old in enumerate(self._items):
                if isinstance(old, PubSubMessage):
                    del self._items[i]
                    self._messages -= 1
                    break
            self._append(item)
        return True

    def _append(self, item: Event) -> None:
        self._items.append(item)
        if isinstance(item, PubSubMessage):
            self._messages += 1

    def take(self, wall: float) -> Event | None:
        """The next event, an overflow gap first when messages were dropped; ``None`` if empty."""
        if self.failed:
            raise SubscriberOverflow(self.maxsize)
        if self._unreported:
            n, self._unreported = self._unreported, 0
            return Gap("overflow", (), since=self._drop_since, until=wall, missed=n)
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, PubSubMessage):
            self._messages -= 1
        return item

    def clear(self) -> int:
        """Drop everything queued (at close); the number of messages dropped."""
        n = self._messages
        self._items.clear()
        self._messages = 0
        self._unreported = 0
        return n
