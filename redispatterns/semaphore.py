"""A counting semaphore: ``Semaphore`` / ``AsyncSemaphore`` and their leases.

At most ``limit`` holders at once, each with a lease that expires (crash-safe): leases live in a
sorted set scored by expiry on the server's clock. A waiter blocks on a release signal with the
lock's wait loop (:mod:`redispatterns._core.semaphore`).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal, overload

from . import _handles
from ._core import lock as core
from ._core import semaphore as sem
from ._core.ops import Flow
from ._runner import monotonic, run_async, run_sync
from .errors import LockLost, LockNotOwned
from .mount import Mount, Namespace

__all__ = ["AsyncSemaphoreLease", "AsyncSemaphore", "SemaphoreLease", "Semaphore"]


class _LeaseBase(_handles.LeaseView):
    """One lease of a semaphore: owns its token; the deadline is monotonic."""

    _client: Any

    def __init__(self, owner: _SemaphoreBase, client: Any, token: str, sent_at: float) -> None:
        self.name = owner.name
        self.token = token
        self._sem = owner
        self._client = client
        self._lease = core.Lease.granted(owner.ttl, owner._ttl_ms, sent_at)

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is still valid."""
        if self.valid_for() <= 0:
            raise LockLost(f"semaphore {self.name!r}: the lease ran out or was released", name=self.name)

    def _release_flow(self) -> Flow[None]:
        if self._lease.released:
            raise LockNotOwned(f"cannot release semaphore {self.name!r}: already released", name=self.name)
        yield from sem.semaphore_release(self._sem._keys, self.token, self._sem.limit, name=self.name)
        self._lease.released = True

    def _extend_flow(self, ttl: float | None) -> Flow[None]:
        ttl = self._lease.ttl if ttl is None else core.check_ttl(ttl)
        sent_at = yield from sem.semaphore_extend(
            self._sem._keys, self.token, core.to_ms(ttl), name=self.name
        )
        self._lease.renewed(sent_at, ttl)

    def _exit_flow(self, et: type[BaseException] | None) -> Flow[None]:
        return _handles.exit_flow("semaphore", self.name, self._release_flow(), et, self._lease)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} valid {self.valid_for():.3f}s>"


class SemaphoreLease(_LeaseBase, _handles.SyncHandle):
    """A held lease of a :class:`Semaphore`; ``with lease:`` releases it."""

    def release(self) -> None:
        """Give the lease back; ``LockNotOwned`` when it had expired."""
        run_sync(self._client, self._release_flow())

    def extend(self, ttl: float | None = None) -> None:
        """Push the expiry out by ``ttl`` (default: the semaphore's); never revives an expired lease."""
        run_sync(self._client, self._extend_flow(ttl))


class AsyncSemaphoreLease(_LeaseBase, _handles.AsyncHandle):
    """The asyncio twin of :class:`SemaphoreLease`."""

    async def release(self) -> None:
        await run_async(self._client, self._release_flow())

    async def extend(self, ttl: float | None = None) -> None:
        await run_async(self._client, self._extend_flow(ttl))


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
        self.limit = sem.check_limit(limit)
        self.ttl = core.check_ttl(ttl)
        self.timeout = core.check_timeout(timeout)
        self._ns = _handles.namespace(mount, client, asyncio=self._asyncio)
        self._keys = sem.semaphore_keys(self._ns.keyspace, self.name)
        self._ttl_ms = core.to_ms(self.ttl)

    @property
    def keys(self) -> sem.SemaphoreKeys:
        return self._keys

    def _acquire_flow(self, blocking: bool, timeout: float | None) -> tuple[Any, str, Flow[float | None]]:
        self._ns.check_write("semaphore acquire")
        if blocking is not True and blocking is not False:
            raise TypeError("blocking must be True or False")
        timeout = self.timeout if timeout is None else core.check_timeout(timeout)
        token = secrets.token_hex(16)
        flow = sem.semaphore_acquire(
            self._keys, token, self._ttl_ms, self.limit, name=self.name, blocking=blocking, timeout=timeout,
            started_at=monotonic(),
        )  # fmt: skip
        return self._ns.client, token, flow

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} limit={self.limit} ttl={self.ttl}s>"


class Semaphore(_SemaphoreBase, _handles.SyncOwner):
    """At most ``limit`` holders at once, each with a lease that expires (crash-safe): leases live
    in a sorted set scored by expiry on the server's clock. ``with Semaphore("api", 3) as lease:``."""

    @overload
    def acquire(self, blocking: Literal[True] = ..., timeout: float | None = ...) -> SemaphoreLease: ...
    @overload
    def acquire(self, blocking: bool, timeout: float | None = ...) -> SemaphoreLease | None: ...

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> SemaphoreLease | None:
        """A ``SemaphoreLease``; ``None`` when ``blocking=False`` and all are taken; ``LockTimeout``
        on timeout."""
        client, token, flow = self._acquire_flow(blocking, timeout)
        sent_at = run_sync(client, flow)
        return None if sent_at is None else SemaphoreLease(self, client, token, sent_at)

    def count(self) -> int:
        """How many leases are live now."""
        return run_sync(self._ns.client, sem.semaphore_count(self._keys))

    def __enter__(self) -> SemaphoreLease:
        lease = self.acquire()
        _handles.push(self, lease)
        return lease


class AsyncSemaphore(_SemaphoreBase, _handles.AsyncOwner):
    """The asyncio twin of :class:`Semaphore`."""

    _asyncio = True

    @overload
    async def acquire(
        self, blocking: Literal[True] = ..., timeout: float | None = ...
    ) -> AsyncSemaphoreLease: ...
    @overload
    async def acquire(self, blocking: bool, timeout: float | None = ...) -> AsyncSemaphoreLease | None: ...

    async def acquire(
        self, blocking: bool = True, timeout: float | None = None
    ) -> AsyncSemaphoreLease | None:
        client, token, flow = self._acquire_flow(blocking, timeout)
        sent_at = await run_async(client, flow)
        return None if sent_at is None else AsyncSemaphoreLease(self, client, token, sent_at)

    async def count(self) -> int:
        return await run_async(self._ns.client, sem.semaphore_count(self._keys))

    async def __aenter__(self) -> AsyncSemaphoreLease:
        lease = await self.acquire()
        _handles.push(self, lease)
        return lease
