"""Distributed locks: ``Lock`` / ``AsyncLock`` and ``@locked``.

``acquire()`` returns a *handle* (``LockHandle`` / ``AsyncLockHandle``) that owns the random token, so one
``Lock`` object may be shared by any number of threads or tasks: a holder can only release or
extend its own lease. Each acquire also returns a fencing token (``held.fence``) that only grows;
give it to the resource you protect so it can refuse a stale holder (``held.fenced_set`` does
that for Redis-side values). The logic lives in :mod:`redispatterns._core.lock`: waiting is a
blocking op the runner executes, auto-renewal a core loop that the runner's background driver
runs. Redlock is in :mod:`redispatterns.redlock`, the semaphore in :mod:`redispatterns.semaphore`.
"""

from __future__ import annotations

import functools
import inspect
import os
import weakref
from binascii import b2a_hex
from collections.abc import Callable, Coroutine
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

from . import _handles
from ._core import lock as core
from ._core import validate
from ._core.ops import Flow
from ._runner import AsyncLoop, SyncLoop, monotonic, run_async, run_sync, start_loop, start_loop_async
from .errors import LockLost, LockNotOwned
from .mount import Mount, Namespace
from .redlock import (  # importable from here as before
    AsyncRedlock,
    AsyncRedlockHandle,
    Redlock,
    RedlockHandle,
)
from .semaphore import AsyncSemaphore, AsyncSemaphoreLease, Semaphore, SemaphoreLease

__all__ = [
    "AsyncLockHandle",
    "AsyncSemaphoreLease",
    "AsyncLock",
    "AsyncRedlock",
    "AsyncRedlockHandle",
    "AsyncSemaphore",
    "LockHandle",
    "SemaphoreLease",
    "Lock",
    "Redlock",
    "RedlockHandle",
    "Semaphore",
    "locked",
]

_urandom = os.urandom
_SPECS: dict[tuple[Any, ...], dict[str, Any]] = {}
"""(flavour, name, ttl, timeout) -> the attributes of a ``Lock`` on the default mount and client:
a lock built per use (``with Lock(name):``) is validated and keyed once per name."""
_SPECS_MAX = 4096
P = ParamSpec("P")
R = TypeVar("R")
OnLost = Callable[[Any], Any]


class LockedDecorator(Protocol):
    """What ``locked(...)`` returns: keeps the decorated function's signature, ``def`` or
    ``async def``."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...


class _HeldBase(_handles.LeaseView):
    """What both handle types are: token, fence and the lease (deadline, loss, release)."""

    _client: Any

    def __init__(self, lock: _LockBase, client: Any, token: bytes, grant: core.Grant) -> None:
        self.name = lock.name
        self._token = token
        self.fence = grant.fence
        self._lock = lock
        self._client = client
        self._lease = core.Lease(lock.ttl, lock._ttl_ms, grant.sent_at + lock._valid_s)
        self._renewal: SyncLoop | AsyncLoop | None = None

    @property
    def token(self) -> str:
        """This holder's random owner token (32 hex digits)."""
        return self._token.decode()

    @property
    def lost(self) -> bool:
        """True once the lease is known lost (renewal failed) or its budget ran out."""
        lease = self._lease
        return lease.lost is not None or (not lease.released and self.valid_for() <= 0)

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is still valid: call before an irreversible step."""
        self._lease.check("lock", self.name, monotonic())

    def _check_live(self, action: str) -> None:
        if self._lease.released:
            raise LockNotOwned(f"cannot {action} lock {self.name!r}: this holder released it", name=self.name)

    def _release_flow(self) -> Flow[bool]:
        """Check and stop the renewal now; the flow that releases (mark ``released`` after it)."""
        if self._lease.released:  # (the check without a call on the path of every release)
            self._check_live("release")
        if self._renewal is not None:
            self._renewal.stop()
        return core.release(self._lock._keys, self._token, self._lease.ttl_ms, name=self.name)

    def _extend_flow(self, ttl: float | None) -> Flow[None]:
        self._check_live("extend")
        ttl = self._lease.ttl if ttl is None else core.check_ttl(ttl)
        sent_at = yield from core.extend(self._lock._keys, self._token, core.to_ms(ttl), name=self.name)
        self._lease.renewed(sent_at, ttl)

    def _fenced_flow(self, resource: str, value: Any, ttl: float | None) -> Flow[None]:
        ns = self._lock._ns
        ns.check_write("fenced_set")
        key = ns.keyspace.tagged("fenced", core.check_name(resource))
        ttl = ns.mount.ttl if ttl is None else core.check_ttl(ttl)
        ok = yield from core.fenced_set(
            key, ns.mount.codec.encode(value), self.fence, core.to_ms(ttl) if ttl else 0
        )
        if not ok:
            raise LockLost(
                f"fenced write to {resource!r} refused: a newer holder of lock {self.name!r} "
                f"(fence > {self.fence}) already wrote it",
                name=self.name,
            )

    def _exit_flow(self, et: type[BaseException] | None) -> Flow[None]:
        return _handles.exit_flow("lock", self.name, self._release_flow(), et, self._lease)

    def _renewal_flow(self) -> Flow[str | None]:
        keys, lock = self._lock._keys, self._lock
        return core.renewal(
            keys, self._token, self._lease, name=self.name, on_lost=lock.on_lost, holder=weakref.ref(self)
        )

    def __repr__(self) -> str:
        released = self._lease.released
        state = "released" if released else ("lost" if self.lost else f"valid {self.valid_for():.3f}s")
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} {state}>"


class LockHandle(_HeldBase, _handles.SyncHandle):
    """A held lock (sync). Owns its token; ``with held:`` releases on exit."""

    def release(self) -> None:
        """Release; ``LockNotOwned`` if the lease had expired or another owner holds the lock.

        Safe to retry after a connection error: a retry that finds its own release done succeeds.
        """
        run_sync(self._client, self._release_flow())
        self._lease.released = True

    def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to ``ttl`` (default: the lock's); never recreates an expired lock."""
        run_sync(self._client, self._extend_flow(ttl))

    def owned(self) -> bool:
        """Ask Redis whether the lock still holds this handle's token."""
        return run_sync(self._client, core.owned(self._lock._keys, self.token))

    def remaining(self) -> float | None:
        """Seconds left on the key's TTL in Redis (None when the key is gone)."""
        return run_sync(self._client, core.pttl(self._lock._keys))

    def fenced_set(self, resource: str, value: Any, *, ttl: float | None = None) -> None:
        """Write ``value`` to a fenced resource iff no newer holder wrote it; else ``LockLost``."""
        run_sync(self._client, self._fenced_flow(resource, value, ttl))

    def _start_renewal(self) -> None:
        self._renewal = start_loop(self._client, self._renewal_flow(), name=f"rp-lock-renew:{self.name}")


class AsyncLockHandle(_HeldBase, _handles.AsyncHandle):
    """A held lock (asyncio). Owns its token; ``async with held:`` releases on exit."""

    async def release(self) -> None:
        """Release; ``LockNotOwned`` if the lease had expired or another owner holds the lock."""
        await run_async(self._client, self._release_flow())
        self._lease.released = True

    async def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to ``ttl`` (default: the lock's); never recreates an expired lock."""
        await run_async(self._client, self._extend_flow(ttl))

    async def owned(self) -> bool:
        """Ask Redis whether the lock still holds this handle's token."""
        return await run_async(self._client, core.owned(self._lock._keys, self.token))

    async def remaining(self) -> float | None:
        """Seconds left on the key's TTL in Redis (None when the key is gone)."""
        return await run_async(self._client, core.pttl(self._lock._keys))

    async def fenced_set(self, resource: str, value: Any, *, ttl: float | None = None) -> None:
        """Write ``value`` to a fenced resource iff no newer holder wrote it; else ``LockLost``."""
        await run_async(self._client, self._fenced_flow(resource, value, ttl))

    def _start_renewal(self) -> None:
        lock: Any = self._lock
        self._renewal = start_loop_async(
            self._client,
            self._renewal_flow(),
            name=f"rp-lock-renew:{self.name}",
            cancel_caller=lock.cancel_on_lost,
        )


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
        spec = None
        if mount is None and client is None and on_lost is None and auto_renew is False:
            tt, to = type(ttl), type(timeout)
            numbers = (tt is float or tt is int) and (to is float or to is int or timeout is None)
            if numbers and type(name) is str:
                spec = (self._asyncio, name, ttl, timeout)  # exact types: True never passes for 1
                known = _SPECS.get(spec)
                if known is not None:  # built and validated before: copy its attributes
                    self.__dict__.update(known)
                    return
        self.name = core.check_name(name)
        self.ttl = core.check_ttl(ttl)
        self.timeout = core.check_timeout(timeout)
        validate.callable_or_none(on_lost, "on_lost", "taking the lost handle")
        self.auto_renew = bool(auto_renew)
        self.on_lost = on_lost
        self._ns = _handles.namespace(mount, client, asyncio=self._asyncio)
        self._keys = core.lock_keys(self._ns.keyspace, self.name)
        self._ttl_ms = core.to_ms(self.ttl)
        self._writable = self._ns.mount.can_write  # a Mount is immutable: checked once
        self._valid_s = core.valid_until(0.0, self._ttl_ms)  # a lease's validity from its send time
        if spec is not None:
            if len(_SPECS) >= _SPECS_MAX:
                _SPECS.clear()
            _SPECS[spec] = dict(self.__dict__)

    @property
    def keys(self) -> core.LockKeys:
        """The Redis keys of this lock (one hash tag)."""
        return self._keys

    def _acquire_flow(
        self, blocking: bool, timeout: float | None
    ) -> tuple[Any, bytes, Flow[core.Grant | None]]:
        """``(client, token, flow)`` of one acquire (the shells only run the flow)."""
        if not self._writable:
            self._ns.check_write("lock acquire")
        if blocking is not True and blocking is not False:
            raise TypeError("blocking must be True or False")
        timeout = self.timeout if timeout is None else core.check_timeout(timeout)
        token = b2a_hex(_urandom(16))  # 128 random bits as 32 hex digits, sent as they are
        flow = core.acquire(
            self._keys, token, self._ttl_ms, name=self.name, blocking=blocking, timeout=timeout,
            started_at=monotonic(),
        )  # fmt: skip
        return self._ns.client, token, flow

    def _fenced_get_flow(self, resource: str) -> Flow[Any]:
        self._ns.check_read("fenced_get")
        raw = yield from core.get_raw(self._ns.keyspace.tagged("fenced", core.check_name(resource)))
        return None if raw is None else self._ns.mount.codec.decode(raw)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ttl={self.ttl}s key={self._keys.lock!r}>"


class Lock(_LockBase, _handles.SyncOwner):
    """A lock on one Redis node or Cluster: ``with Lock("job:7", ttl=10) as held: ...``.

    ``ttl`` (seconds, default 30) is mandatory in effect: the lock always expires, so a crashed
    holder frees it. ``auto_renew=True`` renews at ~ttl/3 from a thread owned by the handle and,
    on loss, sets ``held.lost``, makes ``held.ensure_held()`` raise and calls ``on_lost(held)``.
    ``timeout`` is the default wait of ``acquire()`` and ``with`` (None: wait as long as it takes).
    """

    @overload
    def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> LockHandle: ...
    @overload
    def acquire(self, blocking: bool, timeout: float | None = ...) -> LockHandle | None: ...

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> LockHandle | None:
        """Take the lock: a ``LockHandle`` handle; ``None`` when ``blocking=False`` and it is taken;
        ``LockTimeout`` when ``timeout`` seconds pass first. Waiting blocks on a release signal."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        grant = run_sync(client, flow)
        if grant is None:
            return None
        held = LockHandle(self, client, token, grant)
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

    def __enter__(self) -> LockHandle:
        held = self.acquire()
        _handles.push(self, held)
        return held


class AsyncLock(_LockBase, _handles.AsyncOwner):
    """The asyncio twin of :class:`Lock`; ``cancel_on_lost=True`` also cancels the task that
    acquired the lock when auto-renewal finds it lost."""

    _asyncio = True

    def __init__(
        self, name: str, ttl: float = core.DEFAULT_TTL, *, cancel_on_lost: bool = False, **kw: Any
    ) -> None:
        super().__init__(name, ttl, **kw)
        self.cancel_on_lost = bool(cancel_on_lost)

    @overload
    async def acquire(
        self, blocking: Literal[True] = ..., timeout: float | None = ...
    ) -> AsyncLockHandle: ...
    @overload
    async def acquire(self, blocking: bool, timeout: float | None = ...) -> AsyncLockHandle | None: ...

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> AsyncLockHandle | None:
        """See :meth:`Lock.acquire`."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        grant = await run_async(client, flow)
        if grant is None:
            return None
        held = AsyncLockHandle(self, client, token, grant)
        if self.auto_renew:
            held._start_renewal()
        return held

    async def locked(self) -> bool:
        return await run_async(self._ns.client, core.holder(self._keys)) is not None

    async def remaining(self) -> float | None:
        return await run_async(self._ns.client, core.pttl(self._keys))

    async def fenced_get(self, resource: str) -> Any:
        return await run_async(self._ns.client, self._fenced_get_flow(resource))

    async def __aenter__(self) -> AsyncLockHandle:
        held = await self.acquire()
        _handles.push(self, held)
        return held


def locked(
    name: str,
    *,
    ttl: float = core.DEFAULT_TTL,
    timeout: float | None = None,
    mount: Mount | Namespace | None = None,
    client: Any = None,
    auto_renew: bool = False,
) -> LockedDecorator:
    """Run the function under a lock; ``name`` may be a template of its arguments
    (``"invoice:{invoice_id}"``). Works on ``def`` and ``async def`` alike, and keeps the
    function's signature for type checkers."""
    core.check_ttl(ttl)
    core.check_timeout(timeout)
    if not isinstance(name, str) or not name:
        raise TypeError("locked() needs a lock name or a template such as 'invoice:{invoice_id}'")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
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
        if validate.is_async_callable(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                async with AsyncLock(lock_name(args, kwargs), **opts):
                    return await fn(*args, **kwargs)

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Lock(lock_name(args, kwargs), **opts):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
