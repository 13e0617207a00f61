"""Asyncio clients and event loops: one client set per loop, closed with its loop, and a clear
error when a client passed in belongs to another loop.

An asyncio connection belongs to the loop that opened it, so ``connect_async()`` keeps its
clients per running loop (:class:`LoopClients`). Each loop's set is closed when the loop shuts
down through ``asyncio.run`` / ``asyncio.Runner`` / anyio / pytest-asyncio (they all close the
loop's async generators first, and a guard generator registered with the loop closes the
clients then); sets of loops closed some other way are dropped the next time a loop registers.
:func:`check_loop` is what the asyncio runner asks before using a client: a client whose open
connections were made in another loop (running or closed) is refused with a message naming
the fix, instead of failing deep in asyncio with "attached to a different loop".
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Iterable
from typing import Any

__all__ = [
    "LoopClients",
    "aclose_all",
    "bound_loop",
    "check_loop",
    "close_client",
    "current",
    "for_loop",
    "loops",
    "pop_loop",
]

log = logging.getLogger("redispatterns")
_lock = threading.Lock()
_loops: dict[asyncio.AbstractEventLoop, LoopClients] = {}
# id(client) -> (the client, weakly; the loop it was last used in, weakly). A plain dict keyed by
# id: the runner asks on every call, and a WeakKeyDictionary lookup builds a weakref each time.
_bound: dict[int, tuple[weakref.ref[Any], weakref.ref[asyncio.AbstractEventLoop]]] = {}
_closing: set[asyncio.Task[Any]] = set()


class LoopClients:
    """The clients ``connect_async()`` made in one loop, keyed by URL and options."""

    __slots__ = ("clients", "guard", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.clients: dict[tuple[Any, ...], Any] = {}
        self.guard: Any = None


async def _guard(loop_ref: weakref.ref[asyncio.AbstractEventLoop]) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; the loop's shutdown closes it, and so its clients."""
    try:
        yield
    finally:
        loop = loop_ref()
        entry = pop_loop(loop) if loop is not None else None
        if entry is not None and loop is not None and not loop.is_closed():
            await aclose_all(entry.clients.values())


def _watch(entry: LoopClients) -> None:
    gen = _guard(entry.loop)
    step = gen.asend(None)  # the loop's first-iteration hook now tracks ``gen``
    with contextlib.suppress(StopIteration):
        step.send(None)  # run to the ``yield`` (no await before it): closing it runs ``finally``
    entry.guard = gen


def _abandon(entry: LoopClients) -> None:
    """Forget the clients of a loop closed without shutting down its async generators."""
    gen, entry.guard = entry.guard, None
    if gen is not None:  # finish the guard here, so it is never finalized on the dead loop
        with contextlib.suppress(BaseException):
            gen.aclose().send(None)
    entry.clients.clear()


@atexit.register
def _forget_closed_loops() -> None:
    """At exit, finish the guards of loops closed without shutting down their async generators
    (so none is finalized on a dead loop, with an "Exception ignored" line)."""
    with _lock:
        dead = [(lp, e) for lp, e in _loops.items() if lp.is_closed()]
        for lp, _ in dead:
            del _loops[lp]
    for _, e in dead:
        _abandon(e)


def loops() -> list[LoopClients]:
    with _lock:
        return list(_loops.values())


def pop_loop(loop: asyncio.AbstractEventLoop) -> LoopClients | None:
    with _lock:
        return _loops.pop(loop, None)


def current(loop: asyncio.AbstractEventLoop) -> LoopClients | None:
    """The client set of ``loop`` if it has one (no registration)."""
    return _loops.get(loop)


def for_loop(loop: asyncio.AbstractEventLoop) -> LoopClients:
    """The client set of ``loop`` (the running one), made and watched on first use."""
    entry = _loops.get(loop)
    if entry is not None:
        return entry
    with _lock:
        entry = _loops.get(loop)
        if entry is not None:
            return entry
        dead = [e for lp, e in _loops.items() if lp.is_closed()]
        for e in dead:
            lp = e.loop()
            if lp is not None:
                del _loops[lp]
        entry = _loops[loop] = LoopClients(loop)
    for e in dead:
        _abandon(e)
    _watch(entry)
    return entry


async def aclose_all(clients: Iterable[Any]) -> None:
    """Close ``clients`` (asyncio) in the running loop; a failure is logged, never raised."""
    for client in list(clients):
        try:
            await client.aclose()
        except Exception:  # closing is best effort: a dead server must not stop the others
            log.debug("closing %r failed", client, exc_info=True)


def close_client(client: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close an asyncio ``client`` of ``loop`` from outside it (sync code, another thread, or a
    task of that loop that cannot wait): now when possible, else as soon as the loop runs."""
    if loop is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # sync code inside the loop: cannot wait here
        task = loop.create_task(aclose_all([client]))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():  # another thread's loop
        fut = asyncio.run_coroutine_threadsafe(aclose_all([client]), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=5.0)
    elif running is None:
        loop.run_until_complete(aclose_all([client]))
    # else: a stopped loop while another runs in this thread: nothing safe to do but forget it


def _connections(client: Any) -> list[Any]:
    """The connections a client holds (plain: its pool; Cluster: each node's)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        conns = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
        single = getattr(client, "connection", None)
        return [*conns, single] if single is not None else conns
    nodes = getattr(getattr(client, "nodes_manager", None), "nodes_cache", None) or {}
    out: list[Any] = []
    for node in nodes.values():
        node_client = getattr(node, "redis_connection", None)  # sync Cluster: a client per node
        out += _connections(node_client) if node_client is not None else getattr(node, "_connections", ())
    return out


def _live(client: Any) -> bool:
    return any(getattr(c, "is_connected", False) for c in _connections(client))


def check_loop(client: Any) -> None:
    """Bind ``client`` to the running loop, or raise ``RuntimeError`` when its open connections
    belong to another loop (still running, or closed)."""
    if client is None:  # a flow that only fans out to other clients
        return
    loop = asyncio.get_running_loop()
    entry = _bound.get(id(client))
    if entry is not None and entry[0]() is client:
        bound = entry[1]()
        if bound is loop:
            return
        if bound is not None and _live(client):
            state = "has been closed" if bound.is_closed() else "is another running loop"
            raise RuntimeError(
                f"this asyncio client ({type(client).__name__}) has open connections from another "
                f"event loop, which {state}; an asyncio connection only works in the loop that "
                "opened it. Create the client inside the loop that uses it (e.g. in a lifespan "
                "handler), `await client.aclose()` before its loop ends, or pass no client= and "
                "let redispatterns keep one client per loop (rp.connect_async())"
            )
    key = id(client)
    _bound[key] = (weakref.ref(client, lambda _: _bound.pop(key, None)), weakref.ref(loop))


def bound_loop(client: Any) -> asyncio.AbstractEventLoop | None:
    """The loop ``client`` was last used in through the runner (None: never, or gone)."""
    entry = _bound.get(id(client))
    return None if entry is None or entry[0]() is not client else entry[1]()
