"""The runners' pub/sub driver: a subscriber's connections, readers and local queue.

Part of the runner layer (with ``_runner.py``): every socket, thread, task, sleep, clock read
and wait of pub/sub is here. The protocol decisions (what to send on connect, when to PING, when
a connection is dead, what a reply means, how long to back off) are ``_core/pubsub.LinkState``'s;
the subscriber shells plan links and call user code. Per runtime:

- :func:`start_reader` / :func:`start_reader_async`: one reader thread / task per link, which
  opens a dedicated connection (a Cluster: the shard channel's node, or any node for classic
  channels and patterns), sends what the state asks, reads with the state's deadline and queues
  every event in the :class:`Inbox` / :class:`AsyncInbox`; a lost connection is retried after
  the state's backoff.
- :class:`Inbox` / :class:`AsyncInbox`: the bounded local queue (the core ``OverflowBuffer``)
  and its waits; :func:`next_message` / :func:`next_message_async` take the next message for a
  consumer, running the subscriber's gap flow on the way. A consumer that finds the queue empty
  reads the connection itself when no one else does (the read hand-off, see :class:`Link`), so
  a delivery costs no wake-up of another thread or task.
- :func:`spawn_worker` / :func:`spawn_worker_async`: the handler worker.

Readers and workers hold their subscriber only through a :class:`Control` (and a weak
reference), so a subscriber nobody references is collected: its ``__del__`` calls :func:`stop`,
which ends the readers and returns their connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import random
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core import pubsub as core
from ._core.ops import Flow
from ._core.pubsub import Event, Gap, LinkAction, LinkBroken, LinkState, OverflowBuffer, PubSubMessage
from ._runner import run_async, run_sync

__all__ = [
    "AsyncInbox",
    "Control",
    "Inbox",
    "Link",
    "Worker",
    "next_message",
    "next_message_async",
    "resplit",
    "spawn_worker",
    "spawn_worker_async",
    "start_reader",
    "start_reader_async",
    "stop",
    "wait_live",
    "wait_live_async",
]

log = logging.getLogger("redispatterns.pubsub")
Worker = threading.Thread  # a handler worker (sync)
_WORKER_POLL = 0.25  # how often an idle handler worker lets go of its subscriber
_LEASE = 0.05  # after a consumer read the socket, the background reader keeps off it this long


class Link:
    """One subscriber connection: its subscriptions, protocol state and current connection.

    The read hand-off (sync and asyncio alike): whoever holds the *read role* (``rlock``, or
    ``reading`` in asyncio) may use ``conn``. A consumer that finds the local queue empty takes
    the role itself when it is free and the connection is ``shared`` (subscribed, no reconnect
    under way), reads one reply on its own thread / task and queues its events, so a delivery
    costs no wake-up of another thread. It renews ``lease``: until then the background reader
    stays off the socket (it takes over when no consumer read for ``_LEASE`` seconds, so
    PINGs, reconnects and the queue's overflow policy go on while the consumer is busy). A
    consumer's read that fails leaves the error in ``error`` and ``nudge``s the reader, which
    reconnects as if its own read had failed.
    """

    __slots__ = (
        "conn",
        "error",
        "lease",
        "nudge",
        "reading",
        "ready",
        "rlock",
        "shared",
        "state",
        "subs",
        "task",
        "thread",
        "wakeup",
    )

    def __init__(self, subs: tuple[core.Sub, ...], state: LinkState) -> None:
        self.subs = subs
        self.state = state
        self.conn: Any = None
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        self.rlock = threading.Lock()  # the read role (threads)
        self.reading = False  # the read role (tasks: one event loop, no lock needed)
        self.shared = False  # consumers may read ``conn`` (changed only by the role's holder)
        self.lease = 0.0  # monotonic: the background reader stays off the socket until then
        self.error: BaseException | None = None  # a consumer's failed read, for the reader
        self.nudge = threading.Event()  # wakes a sync reader out of its lease wait
        self.wakeup: asyncio.Future[None] | None = None  # the same for a reader task

    @property
    def sharded(self) -> bool:
        return self.subs[0].kind == "shard"


class Control:
    """What readers share with their subscriber (never the subscriber itself): the client, the
    links, the local queue and the stop signal."""

    __slots__ = ("client", "cluster", "inbox", "links", "live", "lock", "stopped")

    def __init__(self, inbox: Inbox | AsyncInbox) -> None:
        self.client: Any = None
        self.cluster = False
        self.inbox = inbox
        self.links: list[Link] = []
        self.lock = threading.Lock()  # readers add links (after a resharding) under it
        self.stopped = threading.Event()  # set once: sync readers wait on it, async ones poll it
        self.live: asyncio.Event | None = None  # async: set when every link is subscribed


def resplit(link: Link, client: Any) -> list[Link]:
    """After a slot moved, a connection's shard channels may live on several nodes: keep the
    first node's here, and return new links for the others (started by the caller)."""
    if not link.state.attempt or len(link.subs) < 2:
        return []
    groups = list(core.shard_groups(link.subs, lambda s: str(client.get_node_from_key(s.full).name)).values())
    if len(groups) < 2:
        return []
    new = [Link(g, link.state.split([s for s in link.state.subs if s not in g])) for g in groups[1:]]
    link.subs = link.state.subs
    return new


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _lost(st: LinkState, exc: BaseException) -> float:
    """The backoff after a lost connection (the state decides). Logged once per outage: the
    first failure as a warning, the retries that follow at debug level."""
    delay = st.on_lost(_describe(exc), time.monotonic(), time.time(), random.random())
    if st.attempt == 1:
        log.warning("pub/sub connection lost (%s); reconnecting", _describe(exc))
    else:
        log.debug(
            "pub/sub reconnect attempt %d failed (%s); next in %.2fs", st.attempt, _describe(exc), delay
        )
    return delay


def _became_live(st: LinkState, reconnects: int) -> None:
    if st.reconnects > reconnects:
        log.info("pub/sub resubscribed to %s", ", ".join(s.name for s in st.subs))


def _node(client: Any, link: Link) -> Any:
    """The Cluster node a link reads from: its shard channels' node, else any node."""
    if link.sharded:
        return client.get_node_from_key(link.subs[0].full)
    return client.get_random_node() if link.state.attempt else client.get_default_node()


def _shutdown(conn: Any) -> None:
    """Wake a reader blocked on ``conn`` (another thread): the read sees EOF at once."""
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.shutdown(socket.SHUT_RDWR)


def stop(ctl: Control) -> list[Link]:
    """Tell every reader and worker to end, wake the blocked ones; the links (to join)."""
    ctl.stopped.set()
    with ctl.lock:
        links = list(ctl.links)
    for link in links:
        link.nudge.set()
        if link.thread is not None:
            _shutdown(link.conn)
        elif link.task is not None and not link.task.done():
            with contextlib.suppress(RuntimeError):  # a closed loop: the task is gone with it
                link.task.get_loop().call_soon_threadsafe(link.task.cancel)
    ctl.inbox.close()
    return links


def _settled(links: list[Link], ctl: Control, deadline: float | None) -> bool | None:
    """True: every link is subscribed; False: stopped or out of time; None: keep waiting."""
    if links and all(link.state.live for link in links):
        return True
    if ctl.stopped.is_set() or (deadline is not None and time.monotonic() >= deadline):
        return False
    return None


def wait_live(ctl: Control, timeout: float | None) -> bool:
    """Poll until every link is subscribed (True), the subscriber stopped or ``timeout`` passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (done := _settled(ctl.links, ctl, deadline)) is None:
        time.sleep(0.01)
    return done


async def wait_live_async(ctl: Control, timeout: float | None) -> bool:
    """The asyncio twin of :func:`wait_live`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = _settled(ctl.links, ctl, deadline)
        if done is not None:
            return done
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- the local queue


class _InboxBase:
    """The core ``OverflowBuffer`` with its counters; the flavours add the waits."""

    def __init__(self, buffer: OverflowBuffer) -> None:
        self.buffer = buffer
        self.received = 0
        self.delivered = 0
        self.closed = False

    def _offer(self, item: Event) -> bool:
        """Queue ``item`` (False: full under ``block``); counts a queued message."""
        if not self.buffer.put(item, time.time()):
            return False
        if item.__class__ is PubSubMessage:
            self.received += 1
        return True

    def _pop(self) -> Event | None:
        """The next queued event (counted when a message), or ``None``."""
        buffer = self.buffer
        if buffer.idle:
            return None  # the common case of a waiting consumer: no clock read
        item = buffer.take(time.time())
        if item is not None:
            if item.__class__ is PubSubMessage:
                self.delivered += 1
            self._made_room()
        return item

    def _made_room(self) -> None:
        """A take freed a slot: wake a reader waiting under ``overflow="block"``."""


class Inbox(_InboxBase):
    """The local queue for threads. A consumer finding it empty reads the connection itself
    when nobody else does (see :class:`Link`), else waits on a C-level queue of wake-ups (no
    ``Condition``: one futex wake per message, taken outside the buffer's lock)."""

    def __init__(self, buffer: OverflowBuffer) -> None:
        super().__init__(buffer)
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._waiting = 0  # consumers waiting without a wake-up token yet
        self._room = threading.Event()

    def put(self, item: Event, stopped: threading.Event) -> bool:
        """Queue ``item`` (waiting for room under ``block``); False when the buffer failed."""
        while True:
            with self._lock:
                queued = self._offer(item)
                wake = queued and self._waiting > 0
                if wake:
                    self._waiting -= 1
                if not queued:
                    self._room.clear()
            if queued:
                break
            if stopped.is_set() or self.closed:
                return True
            self._room.wait(0.1)
        if wake:
            self._wake.put(None)
        return not self.buffer.failed

    def hand(self, events: list[Event], stopped: threading.Event) -> Event | None:
        """Events a consumer read itself: the first is returned at once when nothing else is
        queued (it never enters the buffer), the others are queued."""
        first: Event | None = None
        with self._lock:
            if self.buffer.idle and not self.closed:
                first = events.pop(0)
                if first.__class__ is PubSubMessage:
                    self.received += 1
                    self.delivered += 1
        for ev in events:
            if not self.put(ev, stopped):
                stopped.set()  # overflow="error": the consumer gets SubscriberOverflow
        return first

    @property
    def waiters(self) -> bool:
        """Consumers wait for an event now (read without the lock: a hint)."""
        return self._waiting > 0

    def pass_on(self) -> bool:
        """The read role was let go: wake one waiting consumer to take it (True if any)."""
        with self._lock:
            if self._waiting <= 0:
                return False
            self._waiting -= 1
        self._wake.put(None)
        return True

    def take(self, deadline: float | None, ctl: Control | None = None) -> Event | None:
        """The next event; ``None`` at ``deadline`` (monotonic) or once closed. With ``ctl``
        (one link), an empty queue is filled by reading the connection here when it is free."""
        link = _solo(ctl)
        polled = False
        while True:
            with self._lock:
                item = self._pop()
                if item is not None or self.closed:
                    return item
                left, expired = _consumer_here(deadline, link)
                read = link is not None and not (expired and polled) and _claim(link)
                if not read:
                    if expired:
                        return None
                    self._waiting += 1
            if read:
                assert ctl is not None and link is not None
                polled = True
                item = _read_here(ctl, link, self, None if left is None else max(0.0, left))
                if item is not None:
                    return item
                continue
            try:
                self._wake.get(timeout=left)
            except queue.Empty:
                with self._lock:
                    try:  # a wake-up raced the timeout: it was ours, the count is settled
                        self._wake.get_nowait()
                    except queue.Empty:
                        self._waiting -= 1

    def _made_room(self) -> None:
        if self.buffer.policy == "block":
            self._room.set()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            waiting, self._waiting = self._waiting, 0
            self.buffer.clear()
        for _ in range(waiting):
            self._wake.put(None)
        self._room.set()


class AsyncInbox(_InboxBase):
    """The local queue for tasks of one event loop: consumers wait on futures (no extra task
    per wait, unlike ``asyncio.wait_for``)."""

    def __init__(self, buffer: OverflowBuffer) -> None:
        super().__init__(buffer)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._room: collections.deque[asyncio.Future[None]] = collections.deque()

    @staticmethod
    def _wake(waiters: collections.deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    async def _wait(waiters: collections.deque[asyncio.Future[None]], timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters.append(fut)
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(ValueError):  # timed out or cancelled: never left behind
                waiters.remove(fut)

    def offer(self, item: Event) -> bool:
        """Queue ``item`` now (no coroutine: the reader's common case); False when the buffer
        is full under ``block`` (then ``await put``)."""
        if not self._offer(item):
            return False
        if self._waiters:
            self._wake(self._waiters)
        return True

    async def put(self, item: Event, stopped: threading.Event) -> bool:
        """Queue ``item`` (waiting for room under ``block``); False when the buffer failed."""
        while not self.offer(item):
            if stopped.is_set() or self.closed:
                return True
            await self._wait(self._room, 0.1)
        return not self.buffer.failed

    async def take(self, deadline: float | None, ctl: Control | None = None) -> Event | None:
        """The next event; ``None`` at ``deadline`` (monotonic) or once closed. With ``ctl``
        (one link), an empty queue is filled by reading the connection in this task when no
        other task reads it."""
        link = _solo(ctl)
        polled = False
        while True:
            item = self._pop()
            if item is not None or self.closed:
                return item
            left, expired = _consumer_here(deadline, link)
            if link is not None and link.shared and not link.reading and not (expired and polled):
                assert ctl is not None
                polled = True
                item = await _read_here_async(ctl, link, self, None if left is None else max(0.0, left))
                if item is not None:
                    return item
                continue
            if expired:
                return None
            await self._wait(self._waiters, left)

    def first(self, events: list[Event]) -> Event | None:
        """Of the events a consumer read itself, the first, taken at once when nothing else is
        queued (it never enters the buffer); the caller queues the rest."""
        if not self.buffer.idle or self.closed:
            return None
        first = events.pop(0)
        if first.__class__ is PubSubMessage:
            self.received += 1
            self.delivered += 1
        return first

    @property
    def waiters(self) -> bool:
        """Consumers wait for an event now."""
        return bool(self._waiters)

    def pass_on(self) -> bool:
        """The read role was let go: wake one waiting consumer to take it (True if any)."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return True
        return False

    def _made_room(self) -> None:
        if self._room:
            self._wake(self._room)

    def close(self) -> None:
        self.closed = True
        self.buffer.clear()
        for waiters in (self._waiters, self._room):
            for fut in waiters:  # maybe from another thread (a collected subscriber)
                with contextlib.suppress(RuntimeError):
                    fut.get_loop().call_soon_threadsafe(_expire, fut)
            waiters.clear()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


GapFlow = Callable[[Gap], Flow[None]]


def next_message(
    ctl: Control, gap_flow: GapFlow, timeout: float | None, read_here: bool = True
) -> PubSubMessage | None:
    """The next message for a consumer thread; gaps met on the way go through ``gap_flow``.
    ``read_here=False``: wait for the reader, never read the socket in this thread (a handler
    worker: it holds its subscriber during a turn, and a read blocked on the socket would keep
    a dropped subscriber from being collected)."""
    inbox = ctl.inbox
    assert isinstance(inbox, Inbox)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        item = inbox.take(deadline, ctl if read_here else None)
        if item is None or isinstance(item, PubSubMessage):
            return item
        run_sync(None, gap_flow(item))


async def next_message_async(
    ctl: Control, gap_flow: GapFlow, timeout: float | None, read_here: bool = True
) -> PubSubMessage | None:
    """The asyncio twin of :func:`next_message`."""
    inbox = ctl.inbox
    assert isinstance(inbox, AsyncInbox)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        item = await inbox.take(deadline, ctl if read_here else None)
        if item is None or isinstance(item, PubSubMessage):
            return item
        await run_async(None, gap_flow(item))


# --------------------------------------------------------------------------- handler workers

# A worker holds its subscriber weakly between messages: ``turn(owner)`` does one wait (at most
# _WORKER_POLL seconds) and one handler call, and says whether to go on.


def spawn_worker(owner: Any, turn: Callable[[Any, float], bool], name: str) -> threading.Thread:
    """Run ``turn(owner, poll)`` on a daemon thread until it returns False or ``owner`` is gone."""
    ref = weakref.ref(owner)

    def work() -> None:
        while True:
            target = ref()
            if target is None or not turn(target, _WORKER_POLL):
                return
            del target

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


def spawn_worker_async(
    owner: Any, turn: Callable[[Any, float], Awaitable[bool]], name: str
) -> asyncio.Task[None]:
    """The asyncio twin of :func:`spawn_worker`: a task of the running loop."""
    ref = weakref.ref(owner)

    async def work() -> None:
        while True:
            target = ref()
            if target is None or not await turn(target, _WORKER_POLL):
                return
            del target

    return asyncio.create_task(work(), name=name)


# --------------------------------------------------------------------------- threads


def start_reader(ctl: Control, link: Link) -> None:
    link.thread = threading.Thread(target=_read, args=(ctl, link), name="rp-pubsub-reader", daemon=True)
    link.thread.start()


def _open(ctl: Control, link: Link) -> tuple[Any, Callable[[], None]]:
    client = ctl.client
    if ctl.cluster:
        if link.state.attempt:
            with contextlib.suppress(Exception):
                client.nodes_manager.initialize()
        if link.sharded:
            for other in resplit(link, client):
                with ctl.lock:
                    if not ctl.stopped.is_set():
                        ctl.links.append(other)
                        start_reader(ctl, other)
        pool = _node(client, link).redis_connection.connection_pool
    else:
        pool = client.connection_pool
    conn = pool.get_connection()

    def release() -> None:
        with contextlib.suppress(Exception):
            conn.disconnect()
        with contextlib.suppress(Exception):
            pool.release(conn)

    return conn, release


def _consumer_here(deadline: float | None, link: Link | None) -> tuple[float | None, bool]:
    """A consumer's turn in ``take``: the seconds left to ``deadline`` and whether it passed;
    with a ``link``, it is marked as having a consumer here (its reader yields the socket)."""
    now = time.monotonic()
    left = None if deadline is None else deadline - now
    if link is not None:
        link.lease = now + _LEASE
    return left, left is not None and left <= 0


def _solo(ctl: Control | None) -> Link | None:
    """The link a consumer may read itself: the subscriber's only one (else ``None``)."""
    if ctl is None:
        return None
    links = ctl.links
    return links[0] if len(links) == 1 else None


def _claim(link: Link) -> bool:
    """Take the read role if it is free and the connection is open to consumers."""
    if not link.rlock.acquire(blocking=False):
        return False
    if link.shared:
        return True
    link.rlock.release()
    return False


def _poll(st: LinkState, conn: Any, wait: float, now: float) -> Any:
    """One turn on the connection: PING / declare it dead as the state says, then one reply
    read within ``wait`` seconds (``None``: nothing came)."""
    if _due(st, now):
        conn.send_command("PING", core.PING_TOKEN, check_health=False)
    if not conn.can_read(timeout=wait):
        return None
    return conn.read_response(disable_decoding=True, disconnect_on_error=False, push_request=True)


def _queue(ctl: Control, inbox: Inbox, events: list[Event]) -> None:
    for ev in events:
        if not inbox.put(ev, ctl.stopped):
            ctl.stopped.set()  # overflow="error": the consumer gets SubscriberOverflow


def _read_here(ctl: Control, link: Link, inbox: Inbox, left: float | None) -> Event | None:
    """A consumer holding the read role: one reply (within ``left`` seconds, at most the
    state's wait) read on this thread. Its first event is returned at once when nothing else
    is queued (it never enters the buffer), the rest are queued; a failure goes to the reader
    thread. Lets go of the role."""
    st = link.state
    first: Event | None = None
    try:
        now = time.monotonic()
        wait = st.wait_time(now)
        if left is not None and left < wait:
            wait = left
        link.lease = now + wait + _LEASE  # the reader sleeps through this read
        reply = _poll(st, link.conn, wait, now)
        if reply is not None:
            events = st.on_reply(reply, time.monotonic(), time.time())
            if events:
                first = inbox.hand(events, ctl.stopped)
    except BaseException as exc:
        link.shared = False
        link.error = exc if isinstance(exc, Exception) else LinkBroken(f"read interrupted: {_describe(exc)}")
        link.nudge.set()
        if not isinstance(exc, Exception):
            raise
    finally:
        link.lease = time.monotonic() + _LEASE
        link.rlock.release()
    inbox.pass_on()  # another consumer waits: it takes the role
    return first


def _read(ctl: Control, link: Link) -> None:
    st, stopped, mono, inbox = link.state, ctl.stopped, time.monotonic, ctl.inbox
    assert isinstance(inbox, Inbox)
    rlock, nudge = link.rlock, link.nudge
    while not stopped.is_set():
        release: Callable[[], None] | None = None
        try:
            conn, release = _open(ctl, link)
            with rlock:
                link.conn, link.error = conn, None
            if stopped.is_set():
                break
            for cmd in st.connecting(mono()):
                conn.send_command(*cmd, check_health=False)
            reconnects = st.reconnects
            while not stopped.is_set():
                if link.error is None and link.shared and (idle := link.lease - mono()) > 0:
                    nudge.wait(idle)  # a consumer reads: stay off the socket
                    nudge.clear()
                    continue
                if not rlock.acquire(timeout=_LEASE):
                    continue
                if link.error is None and link.shared and link.lease > mono():
                    rlock.release()  # a consumer just let go of the role: it will be back
                    inbox.pass_on()  # (or one tried to take it while we held it: it takes it now)
                    continue
                try:
                    if link.error is not None:
                        raise link.error  # a consumer's read failed: reconnect
                    now = mono()
                    reply = _poll(st, conn, st.wait_time(now), now)
                    if reply is not None:
                        events = st.on_reply(reply, mono(), time.time())
                        if st.live and not link.ready.is_set():
                            link.ready.set()
                            link.shared = True
                            _became_live(st, reconnects)
                        if events and inbox.waiters and _solo(ctl) is link:
                            link.lease = mono() + _LEASE  # a consumer waits: it reads the next one
                        _queue(ctl, inbox, events)
                except BaseException:
                    link.shared = False  # under the role: no consumer reads the broken connection
                    raise
                finally:
                    rlock.release()
                if _solo(ctl) is link and inbox.pass_on():
                    link.lease = mono() + _LEASE  # a consumer waits: it takes the role
        except Exception as exc:
            if stopped.is_set():
                break
            link.ready.clear()
            stopped.wait(_lost(st, exc))
        finally:
            with rlock:  # a consumer mid-read (woken by stop's shutdown) finishes first
                link.conn, link.shared, link.error = None, False, None
            if release is not None:
                release()


# --------------------------------------------------------------------------- tasks


def start_reader_async(ctl: Control, link: Link) -> None:
    link.task = asyncio.create_task(_read_async(ctl, link), name="rp-pubsub-reader")


async def _open_async(ctl: Control, link: Link) -> tuple[Any, Callable[[], Awaitable[None]]]:
    client = ctl.client
    if ctl.cluster:
        if link.state.attempt:
            with contextlib.suppress(Exception):
                await client.nodes_manager.initialize()
        if link.sharded:
            for other in resplit(link, client):
                if ctl.stopped.is_set():
                    break
                ctl.links.append(other)
                start_reader_async(ctl, other)
        node = _node(client, link)
        conn = node.acquire_connection()

        async def release_node() -> None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            with contextlib.suppress(Exception):
                node.release(conn)

        try:
            await conn.connect()
        except BaseException:
            await release_node()
            raise
        return conn, release_node
    pool = client.connection_pool
    conn = await pool.get_connection()

    async def release() -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect()
        with contextlib.suppress(Exception):
            await pool.release(conn)

    return conn, release


async def _nap(link: Link, seconds: float) -> None:
    """A reader task staying off the socket while a consumer reads (``link.wakeup`` ends it)."""
    loop = asyncio.get_running_loop()
    fut = link.wakeup = loop.create_future()
    timer = loop.call_later(seconds, _expire, fut)
    try:
        await fut
    finally:
        timer.cancel()
        link.wakeup = None


def _due(st: LinkState, now: float) -> bool:
    """The state's timing for a read turn: True when a PING must go out first; raises
    :class:`LinkBroken` when the last PING's PONG is overdue (a half-open connection)."""
    act = st.tick(now)
    if act is LinkAction.DEAD:
        raise LinkBroken(f"no PONG within {st.ping_timeout}s: half-open connection")
    return act is LinkAction.PING


async def _poll_async(st: LinkState, conn: Any, wait: float, now: float) -> Any:
    """The asyncio twin of :func:`_poll` (``None``: nothing came within ``wait``). Inlined in
    :func:`_read_here_async`, a consumer's hot path (one coroutine less per message)."""
    if _due(st, now):
        await conn.send_command("PING", core.PING_TOKEN, check_health=False)
    try:
        return await conn.read_response(
            disable_decoding=True, timeout=max(0.001, wait), disconnect_on_error=False, push_request=True
        )
    except (RedisTimeoutError, asyncio.TimeoutError):
        return None


async def _queue_async(ctl: Control, inbox: AsyncInbox, events: list[Event]) -> None:
    for ev in events:
        if not inbox.offer(ev):  # full under overflow="block": wait for room
            await inbox.put(ev, ctl.stopped)
        if inbox.buffer.failed:  # overflow="error": the consumer gets SubscriberOverflow
            ctl.stopped.set()


async def _read_here_async(ctl: Control, link: Link, inbox: AsyncInbox, left: float | None) -> Event | None:
    """The asyncio twin of :func:`_read_here`; a consumer cancelled mid-read leaves the
    connection as it was (redis-py's parsers resume a cancelled read)."""
    st = link.state
    first: Event | None = None
    link.reading = True
    try:
        now = time.monotonic()
        wait = st.wait_time(now)
        if left is not None and left < wait:
            wait = left
        link.lease = now + wait + _LEASE  # the reader task sleeps through this read
        conn = link.conn
        if _due(st, now):
            await conn.send_command("PING", core.PING_TOKEN, check_health=False)
        try:
            reply = await conn.read_response(
                disable_decoding=True,
                timeout=max(0.001, wait),
                disconnect_on_error=False,
                push_request=True,
            )
        except (RedisTimeoutError, asyncio.TimeoutError):
            reply = None
        if reply is not None:
            events = st.on_reply(reply, time.monotonic(), time.time())
            if events:
                first = inbox.first(events)
                if events:
                    await _queue_async(ctl, inbox, events)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        link.shared = False
        link.error = exc if isinstance(exc, Exception) else LinkBroken(f"read interrupted: {_describe(exc)}")
        if link.wakeup is not None:
            _expire(link.wakeup)
        if not isinstance(exc, Exception):
            raise
    finally:
        link.lease = time.monotonic() + _LEASE
        link.reading = False
    inbox.pass_on()  # another consumer waits: it takes the role
    return first


async def _read_async(ctl: Control, link: Link) -> None:
    st, stopped, mono, inbox = link.state, ctl.stopped, time.monotonic, ctl.inbox
    assert isinstance(inbox, AsyncInbox)
    while not stopped.is_set():
        release: Callable[[], Awaitable[None]] | None = None
        try:
            conn, release = await _open_async(ctl, link)
            link.conn, link.error = conn, None
            if stopped.is_set():
                break
            for cmd in st.connecting(mono()):
                await conn.send_command(*cmd, check_health=False)
            reconnects = st.reconnects
            while not stopped.is_set():
                if link.reading or (link.error is None and link.shared and link.lease > mono()):
                    await _nap(link, max(_LEASE if link.reading else 0.001, link.lease - mono()))
                    continue  # a consumer reads: stay off the socket
                link.reading = True
                try:
                    if link.error is not None:
                        raise link.error  # a consumer's read failed: reconnect
                    now = mono()
                    reply = await _poll_async(st, conn, st.wait_time(now), now)
                    if reply is None:
                        continue
                    events = st.on_reply(reply, mono(), time.time())
                    if st.live and not link.ready.is_set():
                        link.ready.set()
                        link.shared = True
                        _became_live(st, reconnects)
                        if ctl.live is not None and all(x.ready.is_set() for x in ctl.links):
                            ctl.live.set()
                    if events and inbox.waiters and _solo(ctl) is link:
                        link.lease = mono() + _LEASE  # a consumer waits: it reads the next one
                    await _queue_async(ctl, inbox, events)
                except BaseException:
                    link.shared = False  # no consumer reads the broken connection
                    raise
                finally:
                    link.reading = False
                if _solo(ctl) is link and inbox.pass_on():
                    link.lease = mono() + _LEASE  # a consumer waits: it takes the role
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stopped.is_set():
                break
            link.ready.clear()
            await asyncio.sleep(_lost(st, exc))
        finally:
            link.conn, link.shared, link.error = None, False, None
            if release is not None:
                await asyncio.shield(release())
