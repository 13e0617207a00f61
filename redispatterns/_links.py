"""The runners' pub/sub driver: the connections of a subscriber, read under the core ``LinkState``.

Part of the runner layer (with ``_runner.py``): every socket, thread, task, sleep and clock read
of pub/sub is here. The protocol decisions (what to send on connect, when to PING, when a
connection is dead, what a reply means, how long to back off) are ``_core/pubsub.LinkState``'s;
the subscriber shells plan links, consume events and call user code. Per runtime:

- :func:`start_reader` / :func:`start_reader_async`: one reader thread / task per link, which
  opens a dedicated connection (a Cluster: the shard channel's node, or any node for classic
  channels and patterns), sends what the state asks, reads with the state's deadline and hands
  every event to the subscriber; a lost connection is retried after the state's backoff.
- :func:`spawn` / :func:`spawn_async`: the handler worker; :func:`shutdown` wakes a blocked read.

The two readers follow the same steps in the same order; only ``await`` and the way a read
waits (``can_read`` / a read timeout) differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core import pubsub as core
from ._core.pubsub import Event, LinkBroken, LinkState, Sub

__all__ = [
    "Link",
    "shutdown",
    "spawn",
    "spawn_async",
    "start_reader",
    "start_reader_async",
    "wait_live",
    "wait_live_async",
]

log = logging.getLogger("redispatterns.pubsub")


class Link:
    """One subscriber connection: its subscriptions, protocol state and current connection."""

    __slots__ = ("conn", "ready", "state", "subs", "task", "thread")

    def __init__(self, subs: tuple[Sub, ...], state: LinkState) -> None:
        self.subs = subs
        self.state = state
        self.conn: Any = None
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def sharded(self) -> bool:
        return self.subs[0].kind == "shard"


class Owner(Protocol):
    """What a reader needs from its subscriber (the shell)."""

    _client: Any
    _links: list[Link]

    def _resplit(self, link: Link, client: Any) -> list[Link]: ...


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _lost(st: LinkState, exc: BaseException) -> float:
    """The backoff after a lost connection (the state decides), logged the same in both runtimes."""
    delay = st.on_lost(_describe(exc), time.monotonic(), time.time(), random.random())
    log.info("pub/sub connection lost (%s); retrying in %.2fs", _describe(exc), delay)
    return delay


def _node(client: Any, link: Link) -> Any:
    """The Cluster node a link reads from: its shard channels' node, else any node."""
    if link.sharded:
        return client.get_node_from_key(link.subs[0].full)
    return client.get_random_node() if link.state.attempt else client.get_default_node()


def shutdown(conn: Any) -> None:
    """Wake a reader blocked on ``conn`` (another thread): the read sees EOF at once."""
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.shutdown(socket.SHUT_RDWR)


def _settled(links: list[Link], closed: Callable[[], bool], deadline: float | None) -> bool | None:
    """True: every link is subscribed; False: closed or out of time; None: keep waiting."""
    if links and all(link.state.live for link in links):
        return True
    if closed() or (deadline is not None and time.monotonic() >= deadline):
        return False
    return None


def wait_live(links: list[Link], closed: Callable[[], bool], timeout: float | None) -> bool:
    """Poll until every link is subscribed (True), the owner closed or ``timeout`` passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = _settled(links, closed, deadline)
        if done is not None:
            return done
        time.sleep(0.01)


# --------------------------------------------------------------------------- threads


class SyncOwner(Owner, Protocol):
    _stopping: threading.Event
    _start_lock: threading.Lock

    def _put(self, item: Event) -> None: ...


def spawn(target: Callable[[], None], name: str) -> threading.Thread:
    """Start ``target`` on a daemon thread."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def start_reader(owner: SyncOwner, link: Link, cluster: bool) -> None:
    link.thread = spawn(lambda: _read(owner, link, cluster), "rp-pubsub-reader")


def _open(owner: SyncOwner, link: Link, cluster: bool) -> tuple[Any, Callable[[], None]]:
    client = owner._client
    if cluster:
        if link.state.attempt:
            with contextlib.suppress(Exception):
                client.nodes_manager.initialize()
        if link.sharded:
            for other in owner._resplit(link, client):
                with owner._start_lock:
                    if not owner._stopping.is_set():
                        owner._links.append(other)
                        start_reader(owner, other, cluster)
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


def _read(owner: SyncOwner, link: Link, cluster: bool) -> None:
    st, stopping, mono = link.state, owner._stopping, time.monotonic
    while not stopping.is_set():
        release: Callable[[], None] | None = None
        try:
            conn, release = _open(owner, link, cluster)
            link.conn = conn
            if stopping.is_set():
                break
            for cmd in st.connecting(mono()):
                conn.send_command(*cmd, check_health=False)
            while not stopping.is_set():
                act = st.tick(mono())
                if act == "dead":
                    raise LinkBroken(f"no PONG within {st.ping_timeout}s: half-open connection")
                if act == "ping":
                    conn.send_command("PING", core.PING_TOKEN, check_health=False)
                if not conn.can_read(timeout=st.wait_time(mono())):
                    continue
                reply = conn.read_response(
                    disable_decoding=True, disconnect_on_error=False, push_request=True
                )
                events = st.on_reply(reply, mono(), time.time())
                if st.live:
                    link.ready.set()
                for ev in events:
                    owner._put(ev)
        except Exception as exc:
            if stopping.is_set():
                break
            stopping.wait(_lost(st, exc))
        finally:
            link.conn = None
            if release is not None:
                release()


# --------------------------------------------------------------------------- tasks


class AsyncOwner(Owner, Protocol):
    _stopping: bool
    _live: asyncio.Event | None

    async def _put(self, item: Event) -> None: ...


def spawn_async(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start ``coro`` as a task of the running loop."""
    return asyncio.create_task(coro, name=name)


async def wait_live_async(links: list[Link], closed: Callable[[], bool], timeout: float | None) -> bool:
    """The asyncio twin of :func:`wait_live`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = _settled(links, closed, deadline)
        if done is not None:
            return done
        await asyncio.sleep(0.01)


def start_reader_async(owner: AsyncOwner, link: Link, cluster: bool) -> None:
    link.task = spawn_async(_read_async(owner, link, cluster), "rp-pubsub-reader")


async def _open_async(
    owner: AsyncOwner, link: Link, cluster: bool
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    client = owner._client
    if cluster:
        if link.state.attempt:
            with contextlib.suppress(Exception):
                await client.nodes_manager.initialize()
        if link.sharded:
            for other in owner._resplit(link, client):
                if owner._stopping:
                    break
                owner._links.append(other)
                start_reader_async(owner, other, cluster)
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


def _stopped(owner: AsyncOwner) -> bool:
    return owner._stopping  # read anew each time (a task may set it between two awaits)


async def _read_async(owner: AsyncOwner, link: Link, cluster: bool) -> None:
    st, mono = link.state, time.monotonic
    while not _stopped(owner):
        release: Callable[[], Awaitable[None]] | None = None
        try:
            conn, release = await _open_async(owner, link, cluster)
            link.conn = conn
            if _stopped(owner):
                break
            for cmd in st.connecting(mono()):
                await conn.send_command(*cmd, check_health=False)
            while not _stopped(owner):
                act = st.tick(mono())
                if act == "dead":
                    raise LinkBroken(f"no PONG within {st.ping_timeout}s: half-open connection")
                if act == "ping":
                    await conn.send_command("PING", core.PING_TOKEN, check_health=False)
                try:
                    reply = await conn.read_response(
                        disable_decoding=True,
                        timeout=max(0.001, st.wait_time(mono())),
                        disconnect_on_error=False,
                        push_request=True,
                    )
                except (RedisTimeoutError, asyncio.TimeoutError):
                    continue
                if reply is None:  # the read timed out
                    continue
                events = st.on_reply(reply, mono(), time.time())
                if st.live and not link.ready.is_set():
                    link.ready.set()
                    if owner._live is not None and all(x.ready.is_set() for x in owner._links):
                        owner._live.set()
                for ev in events:
                    await owner._put(ev)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _stopped(owner):
                break
            await asyncio.sleep(_lost(st, exc))
        finally:
            link.conn = None
            if release is not None:
                await asyncio.shield(release())
