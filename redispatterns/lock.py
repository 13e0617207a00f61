"""Distributed locks: ``Lock`` / ``AsyncLock``, ``Redlock`` / ``AsyncRedlock``, ``@locked``, and
``Semaphore`` / ``AsyncSemaphore`` (at most N holders, crash-safe leases).

``acquire()`` returns a *handle* (``Held`` / ``AsyncHeld``) that owns the random token, so one
``Lock`` object may be shared by any number of threads or tasks: a holder can only release or
extend its own lease. Each acquire also returns a fencing token (``held.fence``) that only grows;
give it to the resource you protect so it can refuse a stale holder (``held.fenced_set`` does
that for Redis-side values). The logic lives in :mod:`redispatterns._core.lock`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

import redis
import redis.asyncio
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._core import lock as core
from ._core import validate
from ._core.keys import Keyspace
from ._core.mount import DEFAULT_PREFIX, Mount
from ._core.ops import Flow
from ._runner import run_async, run_sync, socket_timeout
from .errors import LockLost, LockNotOwned
from .mount import Namespace, resolve

__all__ = [
    "AsyncHeld",
    "AsyncLease",
    "AsyncLock",
    "AsyncRedlock",
    "AsyncRedlockHeld",
    "AsyncSemaphore",
    "Held",
    "Lease",
    "Lock",
    "Redlock",
    "RedlockHeld",
    "Semaphore",
    "locked",
]

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H")
OnLost = Callable[[Any], Any]

# (id(lock), handle) pairs entered with ``with lock:``; per thread and per task, never shared.
_ENTERED: contextvars.ContextVar[tuple[tuple[int, Any], ...]] = contextvars.ContextVar(
    "rp_lock_entered", default=()
)


def _push(lock: object, held: object) -> None:
    _ENTERED.set((*_ENTERED.get(), (id(lock), held)))


def _pop(lock: object) -> Any:
    stack = _ENTERED.get()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] == id(lock):
            _ENTERED.set(stack[:i] + stack[i + 1 :])
            return stack[i][1]
    raise RuntimeError("this lock was not entered with 'with' in this thread or task")


# --------------------------------------------------------------------------- blocking waits

_waiters: weakref.WeakKeyDictionary[Any, tuple[Callable[[str, float], Any], float]] = (
    weakref.WeakKeyDictionary()
)
_waiters_lock = threading.Lock()


def _blocking_client(client: Any) -> tuple[Any, float]:
    """A client for BLPOP whose socket timeout exceeds the longest block (None: ``client``
    itself), and that longest block.

    A plain sync ``Redis`` gets a private pool (same connection settings, socket timeout
    ``MAX_BLOCK + 5``, closed with its parent) so waiters neither time out nor take the
    connections holders need. Other clients (asyncio, Cluster, fakeredis) are used as they are,
    with blocks kept under their own socket timeout: an asyncio pool can't be closed from a
    finalizer, and its connections would outlive their event loop.
    """
    pool = getattr(client, "connection_pool", None)
    fake = type(client).__module__.startswith("fakeredis")
    if pool is not None and not fake and type(client) is redis.Redis:
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = core.MAX_BLOCK + 5.0
        clone: Any = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )
        weakref.finalize(client, clone.connection_pool.disconnect)
        return clone, core.MAX_BLOCK
    st = socket_timeout(client)
    return None, core.MAX_BLOCK if st is None else max(core.MIN_BLOCK, min(core.MAX_BLOCK, st - 1.0))


def _blpop_args(key: str, seconds: float) -> tuple[str, str, str]:
    return ("BLPOP", key, f"{max(seconds, core.MIN_BLOCK):.3f}")


def _waiter(client: Any, asyncio_: bool) -> tuple[Callable[[str, float], Any], float]:
    """``(wait(signal_key, seconds), max_block)`` for ``client``, built once per client.

    The cached closure holds the client only weakly (the cache is keyed by it).
    """
    found = _waiters.get(client)
    if found is not None:
        return found
    with _waiters_lock:
        found = _waiters.get(client)
        if found is not None:
            return found
        clone, max_block = _blocking_client(client)
        ref = weakref.ref(client)

        def target() -> Any:
            return clone if clone is not None else ref()

        if asyncio_:

            async def await_signal(key: str, seconds: float) -> Any:
                try:
                    return await target().execute_command(*_blpop_args(key, seconds))
                except RedisTimeoutError:  # the socket gave up first: just try again
                    return None

            out: tuple[Callable[[str, float], Any], float] = (await_signal, max_block)
        else:

            def wait_signal(key: str, seconds: float) -> Any:
                try:
                    return target().execute_command(*_blpop_args(key, seconds))
                except RedisTimeoutError:
                    return None

            out = (wait_signal, max_block)
        _waiters[client] = out
        return out


# --------------------------------------------------------------------------- handles


class _HeldBase:
    """State shared by both handle types: token, fence, lease deadline and loss."""

    def __init__(self, lock: _LockBase, client: Any, token: str, grant: core.Grant) -> None:
        self.name = lock.name
        self.token = token
        self.fence = grant.fence
        self.ttl = lock.ttl
        self._ttl_ms = lock._ttl_ms
        self._lock = lock
        self._client = client
        self._deadline = core.valid_until(grant.sent_at, self._ttl_ms)
        self._lost: BaseException | None = None
        self._released = False
        self._on_lost = lock.on_lost

    @property
    def lost(self) -> bool:
        """True once the lease is known lost (renewal failed) or its budget ran out."""
        return self._lost is not None or (not self._released and self.valid_for() <= 0)

    @property
    def released(self) -> bool:
        return self._released

    def valid_for(self) -> float:
        """Seconds the lease is surely still ours (monotonic: ttl - elapsed - drift); <= 0 when not."""
        if self._lost is not None or self._released:
            return 0.0
        return self._deadline - time.monotonic()

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is still valid: call before an irreversible step."""
        if self._released:
            raise LockLost(f"lock {self.name!r} was released by this holder", name=self.name)
        if self._lost is not None:
            raise LockLost(f"lock {self.name!r} was lost: {self._lost}", name=self.name) from self._lost
        if self.valid_for() <= 0:
            raise LockLost(f"lock {self.name!r}: the lease ran out", name=self.name)

    def _renewed(self, sent_at: float, ttl: float) -> None:
        self.ttl = ttl
        self._ttl_ms = core.to_ms(ttl)
        self._deadline = core.valid_until(sent_at, self._ttl_ms)

    def _mark_lost(self, exc: BaseException) -> bool:
        """Record the loss; True the first time."""
        if self._lost is not None or self._released:
            return False
        self._lost = exc
        return True

    def _check_live(self, action: str) -> None:
        if self._released:
            raise LockNotOwned(f"cannot {action} lock {self.name!r}: this holder released it", name=self.name)

    def _release_flow(self) -> Flow[bool]:
        return core.release(self._lock._keys, self.token, self._ttl_ms, name=self.name)

    def _extend_flow(self, ttl: float) -> Flow[float]:
        return core.extend(self._lock._keys, self.token, core.to_ms(ttl), name=self.name)

    def _fenced_flow(self, resource: str, value: Any, ttl: float | None) -> Flow[bool]:
        ns = self._lock._ns
        ns.check_write("fenced_set")
        key = ns.keyspace.tagged("fenced", core.check_name(resource))
        ttl = ns.mount.ttl if ttl is None else core.check_ttl(ttl)
        return core.fenced_set(key, ns.mount.codec.encode(value), self.fence, core.to_ms(ttl) if ttl else 0)

    def _stale(self, resource: str) -> LockLost:
        return LockLost(
            f"fenced write to {resource!r} refused: a newer holder of lock {self.name!r} "
            f"(fence > {self.fence}) already wrote it",
            name=self.name,
        )

    def __repr__(self) -> str:
        state = "released" if self._released else ("lost" if self.lost else f"valid {self.valid_for():.3f}s")
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} {state}>"


class Held(_HeldBase):
    """A held lock (sync). Owns its token; ``with held:`` releases on exit."""

    def __init__(self, lock: Lock, client: Any, token: str, grant: core.Grant) -> None:
        super().__init__(lock, client, token, grant)
        self._stop: threading.Event | None = None  # made by _start_renewal
        self._thread: threading.Thread | None = None

    def release(self) -> None:
        """Release; ``LockNotOwned`` if the lease had expired or another owner holds the lock.

        Safe to retry after a connection error: a retry that finds its own release done succeeds.
        """
        self._check_live("release")
        if self._stop is not None:
            self._stop.set()
        run_sync(self._client, self._release_flow())
        self._released = True

    def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to ``ttl`` (default: the lock's); never recreates an expired lock."""
        self._check_live("extend")
        ttl = self.ttl if ttl is None else core.check_ttl(ttl)
        self._renewed(run_sync(self._client, self._extend_flow(ttl)), ttl)

    def owned(self) -> bool:
        """Ask Redis whether the lock still holds this handle's token."""
        return run_sync(self._client, core.owned(self._lock._keys, self.token))

    def remaining(self) -> float | None:
        """Seconds left on the key's TTL in Redis (None when the key is gone)."""
        return run_sync(self._client, core.pttl(self._lock._keys))

    def fenced_set(self, resource: str, value: Any, *, ttl: float | None = None) -> None:
        """Write ``value`` to a fenced resource iff no newer holder wrote it; else ``LockLost``."""
        if not run_sync(self._client, self._fenced_flow(resource, value, ttl)):
            raise self._stale(resource)

    def _start_renewal(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"rp-lock-renew:{self.name}", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        stop = self._stop
        assert stop is not None
        delay = core.renew_delay(self.ttl, random.random())
        attempt = 0
        while not stop.wait(delay):
            try:
                sent_at = run_sync(self._client, self._extend_flow(self.ttl))
            except LockNotOwned as exc:
                self._lose(exc)
                return
            except Exception as exc:  # transient: retry while the lease is still valid
                retry = core.renew_retry_delay(self.valid_for(), attempt, random.random())
                attempt += 1
                if retry is None:
                    self._lose(exc)
                    return
                delay = retry
                continue
            if stop.is_set():
                return
            self._renewed(sent_at, self.ttl)
            attempt = 0
            delay = core.renew_delay(self.ttl, random.random())

    def _lose(self, exc: BaseException) -> None:
        if self._stop is not None and self._stop.is_set():  # released meanwhile: not a loss
            return
        if self._mark_lost(exc) and self._on_lost is not None:
            self._on_lost(self)

    def __enter__(self) -> Held:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        _exit_release(self, self.release, et)


def _exit_release(
    held: _HeldBase | _LeaseBase, release: Callable[[], Any], et: type[BaseException] | None
) -> Any:
    try:
        return release()
    except LockNotOwned as exc:
        if et is None:
            raise LockLost(
                f"lock {held.name!r} was lost before the block ended: {exc}", name=held.name
            ) from exc
        return None


class AsyncHeld(_HeldBase):
    """A held lock (asyncio). Owns its token; ``async with held:`` releases on exit."""

    def __init__(self, lock: AsyncLock, client: Any, token: str, grant: core.Grant) -> None:
        super().__init__(lock, client, token, grant)
        self._task: asyncio.Task[None] | None = None
        self._guarded = asyncio.current_task() if lock.cancel_on_lost else None

    async def release(self) -> None:
        """Release; ``LockNotOwned`` if the lease had expired or another owner holds the lock."""
        self._check_live("release")
        self._stop_renewal()
        await run_async(self._client, self._release_flow())
        self._released = True

    async def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to ``ttl`` (default: the lock's); never recreates an expired lock."""
        self._check_live("extend")
        ttl = self.ttl if ttl is None else core.check_ttl(ttl)
        self._renewed(await run_async(self._client, self._extend_flow(ttl)), ttl)

    async def owned(self) -> bool:
        """Ask Redis whether the lock still holds this handle's token."""
        return await run_async(self._client, core.owned(self._lock._keys, self.token))

    async def remaining(self) -> float | None:
        """Seconds left on the key's TTL in Redis (None when the key is gone)."""
        return await run_async(self._client, core.pttl(self._lock._keys))

    async def fenced_set(self, resource: str, value: Any, *, ttl: float | None = None) -> None:
        """Write ``value`` to a fenced resource iff no newer holder wrote it; else ``LockLost``."""
        if not await run_async(self._client, self._fenced_flow(resource, value, ttl)):
            raise self._stale(resource)

    def _start_renewal(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._renew_loop(), name=f"rp-lock-renew:{self.name}"
        )

    def _stop_renewal(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _renew_loop(self) -> None:
        delay = core.renew_delay(self.ttl, random.random())
        attempt = 0
        while True:
            await asyncio.sleep(delay)
            try:
                sent_at = await run_async(self._client, self._extend_flow(self.ttl))
            except LockNotOwned as exc:
                await self._lose(exc)
                return
            except Exception as exc:
                retry = core.renew_retry_delay(self.valid_for(), attempt, random.random())
                attempt += 1
                if retry is None:
                    await self._lose(exc)
                    return
                delay = retry
                continue
            self._renewed(sent_at, self.ttl)
            attempt = 0
            delay = core.renew_delay(self.ttl, random.random())

    async def _lose(self, exc: BaseException) -> None:
        if not self._mark_lost(exc):
            return
        if self._on_lost is not None:
            result = self._on_lost(self)
            if inspect.isawaitable(result):
                await result
        if self._guarded is not None and not self._guarded.done():
            self._guarded.cancel(f"lock {self.name!r} lost")

    async def __aenter__(self) -> AsyncHeld:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.release()
        except LockNotOwned as exc:
            if et is None:
                raise LockLost(
                    f"lock {self.name!r} was lost before the block ended: {exc}", name=self.name
                ) from exc


# --------------------------------------------------------------------------- locks


class _LockBase:
    _asyncio = False

    def __init__(
        self,
        name: str,
        ttl: float = core.DEFAULT_TTL,
        *,
        mount: Mount | Namespace | None = None,
        client: Any = None,
        auto_renew: bool = False,
        on_lost: OnLost | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = core.check_name(name)
        self.ttl = core.check_ttl(ttl)
        self.timeout = core.check_timeout(timeout)
        validate.callable_or_none(on_lost, "on_lost", "taking the lost handle")
        self.auto_renew = bool(auto_renew)
        self.on_lost = on_lost
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        self._keys = core.lock_keys(self._ns.keyspace, self.name)
        self._ttl_ms = core.to_ms(self.ttl)
        self._waiting: tuple[Any, Callable[[str, float], Any], float] | None = None

    @property
    def keys(self) -> core.LockKeys:
        """The Redis keys of this lock (one hash tag)."""
        return self._keys

    def _acquire_flow(
        self, blocking: bool, timeout: float | None
    ) -> tuple[Any, str, Flow[core.Grant | None]]:
        """``(client, token, flow)`` of one acquire (the shells only run the flow)."""
        self._ns.check_write("lock acquire")
        if blocking is not True and blocking is not False:
            raise TypeError("blocking must be True or False")
        timeout = self.timeout if timeout is None else core.check_timeout(timeout)
        client = self._ns.client
        cached = self._waiting
        if cached is None or cached[0] is not client:
            cached = self._waiting = (client, *_waiter(client, self._asyncio))
        _, wait, max_block = cached
        token = secrets.token_hex(16)
        flow = core.acquire(
            self._keys,
            token,
            self._ttl_ms,
            name=self.name,
            blocking=blocking,
            timeout=timeout,
            wait=wait,
            max_block=max_block,
            started_at=time.monotonic(),
        )
        return client, token, flow

    def _fenced_get_flow(self, resource: str) -> Flow[Any]:
        self._ns.check_read("fenced_get")
        raw = yield from core.get_raw(self._ns.keyspace.tagged("fenced", core.check_name(resource)))
        return None if raw is None else self._ns.mount.codec.decode(raw)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ttl={self.ttl}s key={self._keys.lock!r}>"


class Lock(_LockBase):
    """A lock on one Redis node or Cluster: ``with Lock("job:7", ttl=10) as held: ...``.

    ``ttl`` (seconds, default 30) is mandatory in effect: the lock always expires, so a crashed
    holder frees it. ``auto_renew=True`` renews at ~ttl/3 from a thread owned by the handle and,
    on loss, sets ``held.lost``, makes ``held.ensure_held()`` raise and calls ``on_lost(held)``.
    ``timeout`` is the default wait of ``acquire()`` and ``with`` (None: wait as long as it takes).
    """

    @overload
    def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> Held: ...
    @overload
    def acquire(self, blocking: bool, timeout: float | None = ...) -> Held | None: ...

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Held | None:
        """Take the lock: a ``Held`` handle; ``None`` when ``blocking=False`` and it is taken;
        ``LockTimeout`` when ``timeout`` seconds pass first. Waiting blocks on a release signal."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        grant = run_sync(client, flow)
        if grant is None:
            return None
        held = Held(self, client, token, grant)
        if self.auto_renew:
            held._start_renewal()
        return held

    def locked(self) -> bool:
        """True when anyone holds the lock."""
        return run_sync(self._ns.client, core.holder(self._keys)) is not None

    def remaining(self) -> float | None:
        """Seconds left on the current holder's lease; None when free."""
        return run_sync(self._ns.client, core.pttl(self._keys))

    def fenced_get(self, resource: str) -> Any:
        """The value last written with ``held.fenced_set(resource, ...)`` (None when absent)."""
        return run_sync(self._ns.client, self._fenced_get_flow(resource))

    def __enter__(self) -> Held:
        held = self.acquire()
        _push(self, held)
        return held

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        held: Held = _pop(self)
        held.__exit__(et, ev, tb)


class AsyncLock(_LockBase):
    """The asyncio twin of :class:`Lock`; ``cancel_on_lost=True`` also cancels the task that
    acquired the lock when auto-renewal finds it lost."""

    _asyncio = True

    def __init__(
        self, name: str, ttl: float = core.DEFAULT_TTL, *, cancel_on_lost: bool = False, **kw: Any
    ) -> None:
        super().__init__(name, ttl, **kw)
        self.cancel_on_lost = bool(cancel_on_lost)

    @overload
    async def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> AsyncHeld: ...
    @overload
    async def acquire(self, blocking: bool, timeout: float | None = ...) -> AsyncHeld | None: ...

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> AsyncHeld | None:
        """See :meth:`Lock.acquire`."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        grant = await run_async(client, flow)
        if grant is None:
            return None
        held = AsyncHeld(self, client, token, grant)
        if self.auto_renew:
            held._start_renewal()
        return held

    async def locked(self) -> bool:
        return await run_async(self._ns.client, core.holder(self._keys)) is not None

    async def remaining(self) -> float | None:
        return await run_async(self._ns.client, core.pttl(self._keys))

    async def fenced_get(self, resource: str) -> Any:
        return await run_async(self._ns.client, self._fenced_get_flow(resource))

    async def __aenter__(self) -> AsyncHeld:
        held = await self.acquire()
        _push(self, held)
        return held

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        held: AsyncHeld = _pop(self)
        await held.__aexit__(et, ev, tb)


# --------------------------------------------------------------------------- @locked


def locked(
    name: str,
    *,
    ttl: float = core.DEFAULT_TTL,
    timeout: float | None = None,
    mount: Mount | Namespace | None = None,
    client: Any = None,
    auto_renew: bool = False,
) -> Callable[[F], F]:
    """Run the function under a lock; ``name`` may be a template of its arguments
    (``"invoice:{invoice_id}"``). Works on ``def`` and ``async def`` alike."""
    core.check_ttl(ttl)
    core.check_timeout(timeout)
    if not isinstance(name, str) or not name:
        raise TypeError("locked() needs a lock name or a template such as 'invoice:{invoice_id}'")

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        templated = "{" in name

        def lock_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if not templated:
                return name
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                return name.format(**bound.arguments)
            except (KeyError, IndexError) as exc:
                raise ValueError(
                    f"lock template {name!r} names {exc} which {fn.__name__}() does not take"
                ) from None

        opts: dict[str, Any] = {"ttl": ttl, "timeout": timeout, "mount": mount, "client": client}
        opts["auto_renew"] = auto_renew
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                async with AsyncLock(lock_name(args, kwargs), **opts):
                    return await fn(*args, **kwargs)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Lock(lock_name(args, kwargs), **opts):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


# --------------------------------------------------------------------------- Redlock


class _RedlockBase(Generic[H]):
    def __init__(
        self,
        name: str,
        clients: Sequence[Any],
        ttl: float = 10.0,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_timeout: float = 0.05,
        retries: int = 3,
        retry_delay: float = 0.2,
        timeout: float | None = None,
    ) -> None:
        self.name = core.check_name(name)
        self.ttl = core.check_ttl(ttl)
        clients = list(clients)
        if len(clients) < 1:
            raise ValueError("Redlock needs at least one master client (use 3 or 5 independent masters)")
        for c in clients:
            if isinstance(c, (str, bytes)):
                raise TypeError("Redlock takes clients, not URLs: pass rp.connect(url) for each master")
        self.clients = clients
        self.node_timeout = core.check_ttl(node_timeout, "node_timeout")
        if self.node_timeout * 2 >= self.ttl:
            raise ValueError(f"node_timeout ({node_timeout} s) must be much smaller than ttl ({ttl} s)")
        self.retries = validate.count(retries, "retries", minimum=0)
        self.retry_delay = core.check_ttl(retry_delay, "retry_delay")
        self.timeout = core.check_timeout(timeout)
        self.key = Keyspace(prefix).tagged("redlock", self.name)

    def _node_flow(self, action: str, args: Sequence[Any]) -> Callable[[], Flow[bool]]:
        if action == "acquire":
            return lambda: core.node_acquire(self.key, args[0], args[1])
        if action == "extend":
            return lambda: core.node_extend(self.key, args[0], args[1])
        return lambda: core.node_release(self.key, args[0])

    def _acquire_flow(self, fanout: Any, token: str) -> Flow[core.RedlockVote]:
        return core.redlock_acquire(
            fanout,
            token,
            core.to_ms(self.ttl),
            name=self.name,
            retries=self.retries,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} nodes={len(self.clients)} ttl={self.ttl}s>"


class _RedlockHeldBase:
    def __init__(self, lock: _RedlockBase[Any], token: str, vote: core.RedlockVote) -> None:
        self.name = lock.name
        self.token = token
        self.votes = vote.votes
        self.validity_ms = vote.validity_ms
        self._lock = lock
        self._deadline = vote.deadline
        self._released = False

    def valid_for(self) -> float:
        """Seconds the quorum lease is surely still ours (validity - time since the round)."""
        return 0.0 if self._released else self._deadline - time.monotonic()

    def ensure_held(self) -> None:
        if self.valid_for() <= 0:
            raise LockLost(f"Redlock {self.name!r}: the validity ran out", name=self.name)

    def _extend_flow(self) -> Flow[core.RedlockVote]:
        return core.redlock_extend(self._lock._fanout, self.token, core.to_ms(self._lock.ttl), name=self.name)  # type: ignore[attr-defined]

    def _release_flow(self) -> Flow[int]:
        return core.redlock_release(self._lock._fanout, self.token)  # type: ignore[attr-defined]

    def _renewed(self, vote: core.RedlockVote) -> None:
        self.votes, self.validity_ms = vote.votes, vote.validity_ms
        self._deadline = vote.deadline


class RedlockHeld(_RedlockHeldBase):
    """A Redlock held by a majority; ``valid_for()`` is the remaining safe budget."""

    _lock: Redlock

    def release(self) -> None:
        run_sync(None, self._release_flow())
        self._released = True

    def extend(self) -> None:
        """Extend on every master; ``LockNotOwned`` unless a majority still held it."""
        self.ensure_held()
        self._renewed(run_sync(None, self._extend_flow()))

    def __enter__(self) -> RedlockHeld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncRedlockHeld(_RedlockHeldBase):
    """The asyncio twin of :class:`RedlockHeld`."""

    _lock: AsyncRedlock

    async def release(self) -> None:
        await run_async(None, self._release_flow())
        self._released = True

    async def extend(self) -> None:
        self.ensure_held()
        self._renewed(await run_async(None, self._extend_flow()))

    async def __aenter__(self) -> AsyncRedlockHeld:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Redlock(_RedlockBase[RedlockHeld]):
    """Redlock over N independent masters (sync clients): a majority within the validity.

    Requests go to every master in parallel, each bounded by ``node_timeout``; the lease is
    valid for ``ttl - elapsed - (ttl·1% + 2 ms)``; a failed round is released on every master
    and retried after a random delay. Not a substitute for fencing (see docs/lock.md).
    """

    def __init__(self, name: str, clients: Sequence[Any], ttl: float = 10.0, **kw: Any) -> None:
        super().__init__(name, clients, ttl, **kw)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4 * len(self.clients), thread_name_prefix="rp-redlock"
        )

    def _fanout(self, action: str, args: Sequence[Any]) -> list[Any]:
        make = self._node_flow(action, args)
        futures = [self._pool.submit(run_sync, c, make()) for c in self.clients]
        concurrent.futures.wait(futures, timeout=self.node_timeout)
        out: list[Any] = []
        for f in futures:
            if not f.done():
                out.append(TimeoutError("node timeout"))
            elif f.exception() is not None:
                out.append(f.exception())
            else:
                out.append(f.result())
        return out

    def acquire(self) -> RedlockHeld:
        """Acquire on a majority; ``LockTimeout`` after the retries."""
        token = secrets.token_hex(16)
        return RedlockHeld(self, token, run_sync(None, self._acquire_flow(self._fanout, token)))

    def __enter__(self) -> RedlockHeld:
        held = self.acquire()
        _push(self, held)
        return held

    def __exit__(self, *exc: object) -> None:
        _pop(self).release()

    def close(self) -> None:
        """Stop the worker threads (the clients are the caller's)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class AsyncRedlock(_RedlockBase[AsyncRedlockHeld]):
    """The asyncio twin of :class:`Redlock` (asyncio clients; requests gathered)."""

    async def _fanout(self, action: str, args: Sequence[Any]) -> list[Any]:
        make = self._node_flow(action, args)

        async def one(c: Any) -> Any:
            return await asyncio.wait_for(run_async(c, make()), self.node_timeout)

        return list(await asyncio.gather(*(one(c) for c in self.clients), return_exceptions=True))

    async def acquire(self) -> AsyncRedlockHeld:
        token = secrets.token_hex(16)
        return AsyncRedlockHeld(self, token, await run_async(None, self._acquire_flow(self._fanout, token)))

    async def __aenter__(self) -> AsyncRedlockHeld:
        held = await self.acquire()
        _push(self, held)
        return held

    async def __aexit__(self, *exc: object) -> None:
        await _pop(self).release()

    async def close(self) -> None:
        """Nothing to free (the clients are the caller's); kept for symmetry with ``Redlock``."""


# --------------------------------------------------------------------------- semaphore


class _LeaseBase:
    """One lease of a semaphore: owns its token; the deadline is monotonic."""

    def __init__(self, sem: _SemaphoreBase, client: Any, token: str, sent_at: float) -> None:
        self.name = sem.name
        self.token = token
        self.ttl = sem.ttl
        self._sem = sem
        self._client = client
        self._deadline = core.valid_until(sent_at, sem._ttl_ms)
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def valid_for(self) -> float:
        """Seconds the lease is surely still ours (monotonic); <= 0 when not."""
        return 0.0 if self._released else self._deadline - time.monotonic()

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is still valid."""
        if self.valid_for() <= 0:
            raise LockLost(f"semaphore {self.name!r}: the lease ran out or was released", name=self.name)

    def _release_flow(self) -> Flow[None]:
        if self._released:
            raise LockNotOwned(f"cannot release semaphore {self.name!r}: already released", name=self.name)
        return core.semaphore_release(self._sem._keys, self.token, self._sem.limit, name=self.name)

    def _extend_flow(self, ttl: float) -> Flow[float]:
        return core.semaphore_extend(self._sem._keys, self.token, core.to_ms(ttl), name=self.name)

    def _extended(self, sent_at: float, ttl: float) -> None:
        self.ttl = ttl
        self._deadline = core.valid_until(sent_at, core.to_ms(ttl))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} valid {self.valid_for():.3f}s>"


class Lease(_LeaseBase):
    """A held lease of a :class:`Semaphore`; ``with lease:`` releases it."""

    def release(self) -> None:
        """Give the lease back; ``LockNotOwned`` when it had expired."""
        run_sync(self._client, self._release_flow())
        self._released = True

    def extend(self, ttl: float | None = None) -> None:
        """Push the expiry out by ``ttl`` (default: the semaphore's); never revives an expired lease."""
        ttl = self.ttl if ttl is None else core.check_ttl(ttl)
        self._extended(run_sync(self._client, self._extend_flow(ttl)), ttl)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        _exit_release(self, self.release, et)


class AsyncLease(_LeaseBase):
    """The asyncio twin of :class:`Lease`."""

    async def release(self) -> None:
        await run_async(self._client, self._release_flow())
        self._released = True

    async def extend(self, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else core.check_ttl(ttl)
        self._extended(await run_async(self._client, self._extend_flow(ttl)), ttl)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.release()
        except LockNotOwned as exc:
            if et is None:
                raise LockLost(
                    f"semaphore {self.name!r}: lease lost before the block ended", name=self.name
                ) from exc


class _SemaphoreBase:
    _asyncio = False

    def __init__(
        self,
        name: str,
        limit: int,
        ttl: float = core.DEFAULT_TTL,
        *,
        mount: Mount | Namespace | None = None,
        client: Any = None,
        timeout: float | None = None,
    ) -> None:
        self.name = core.check_name(name)
        self.limit = core.check_limit(limit)
        self.ttl = core.check_ttl(ttl)
        self.timeout = core.check_timeout(timeout)
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        self._keys = core.semaphore_keys(self._ns.keyspace, self.name)
        self._ttl_ms = core.to_ms(self.ttl)

    @property
    def keys(self) -> core.SemaphoreKeys:
        return self._keys

    def _acquire_flow(self, blocking: bool, timeout: float | None) -> tuple[Any, str, Flow[float | None]]:
        self._ns.check_write("semaphore acquire")
        if blocking is not True and blocking is not False:
            raise TypeError("blocking must be True or False")
        timeout = self.timeout if timeout is None else core.check_timeout(timeout)
        client = self._ns.client
        wait, max_block = _waiter(client, self._asyncio)
        token = secrets.token_hex(16)
        flow = core.semaphore_acquire(
            self._keys,
            token,
            self._ttl_ms,
            self.limit,
            name=self.name,
            blocking=blocking,
            timeout=timeout,
            wait=wait,
            max_block=max_block,
            started_at=time.monotonic(),
        )
        return client, token, flow

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} limit={self.limit} ttl={self.ttl}s>"


class Semaphore(_SemaphoreBase):
    """At most ``limit`` holders at once, each with a lease that expires (crash-safe): leases live
    in a sorted set scored by expiry on the server's clock. ``with Semaphore("api", 3) as lease:``."""

    @overload
    def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> Lease: ...
    @overload
    def acquire(self, blocking: bool, timeout: float | None = ...) -> Lease | None: ...

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Lease | None:
        """A ``Lease``; ``None`` when ``blocking=False`` and all are taken; ``LockTimeout`` on timeout."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        sent_at = run_sync(client, flow)
        return None if sent_at is None else Lease(self, client, token, sent_at)

    def count(self) -> int:
        """How many leases are live now."""
        return run_sync(self._ns.client, core.semaphore_count(self._keys))

    def __enter__(self) -> Lease:
        lease = self.acquire()
        _push(self, lease)
        return lease

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease: Lease = _pop(self)
        lease.__exit__(et, ev, tb)


class AsyncSemaphore(_SemaphoreBase):
    """The asyncio twin of :class:`Semaphore`."""

    _asyncio = True

    @overload
    async def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> AsyncLease: ...
    @overload
    async def acquire(self, blocking: bool, timeout: float | None = ...) -> AsyncLease | None: ...

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> AsyncLease | None:
        client, token, flow = self._acquire_flow(blocking, timeout)
        sent_at = await run_async(client, flow)
        return None if sent_at is None else AsyncLease(self, client, token, sent_at)

    async def count(self) -> int:
        return await run_async(self._ns.client, core.semaphore_count(self._keys))

    async def __aenter__(self) -> AsyncLease:
        lease = await self.acquire()
        _push(self, lease)
        return lease

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        lease: AsyncLease = _pop(self)
        await lease.__aexit__(et, ev, tb)
