"""What the lock, Redlock and semaphore shells share: ``with lock:`` bookkeeping and the exit.

``with lock:`` returns a handle but ``__exit__`` receives none, so the entered handles sit on a
context-local stack (per thread and per task, never shared). Leaving a block releases the
handle; a lease already gone when the block ends is one error for every kind and flavour.
"""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import Any, TypeVar

from ._core import lock as core
from ._core.mount import DEFAULT_PREFIX, Mount
from ._core.ops import Flow
from ._runner import monotonic, run_async, run_sync
from .errors import LockNotOwned
from .mount import Namespace, resolve

__all__ = [
    "AsyncHandle",
    "AsyncOwner",
    "LeaseView",
    "SyncHandle",
    "SyncOwner",
    "exit_flow",
    "namespace",
    "pop",
    "push",
]

H = TypeVar("H")

# (id(lock), handle) pairs entered with ``with lock:``; per thread and per task, never shared.
_ENTERED: contextvars.ContextVar[tuple[tuple[int, Any], ...]] = contextvars.ContextVar(
    "rp_lock_entered", default=()
)


_DEFAULT_MOUNT = Mount(prefix=DEFAULT_PREFIX)
_DEFAULT_NS: dict[bool, Namespace] = {}


def namespace(mount: Mount | Namespace | None, client: Any, *, asyncio: bool) -> Namespace:
    """``mount.resolve`` for locks built per use (``with Lock(name):``): the default mount is
    built once, and with no client either the whole binding is shared (it looks the process
    default client up at each call, so ``configure()`` still applies)."""
    if mount is None:
        if client is None:
            ns = _DEFAULT_NS.get(asyncio)
            if ns is None:
                ns = _DEFAULT_NS[asyncio] = resolve(_DEFAULT_MOUNT, None, asyncio=asyncio)
            return ns
        mount = _DEFAULT_MOUNT
    return resolve(mount, client, asyncio=asyncio)


class LeaseView:
    """What every lock or semaphore handle reads off its lease (``_lease``, a core ``Lease``)."""

    _lease: core.Lease

    @property
    def ttl(self) -> float:
        """The lease length in seconds (changed by ``extend(ttl)``)."""
        return self._lease.ttl

    @property
    def released(self) -> bool:
        return self._lease.released

    def valid_for(self) -> float:
        """Seconds the lease is surely still ours (monotonic: ttl - elapsed - drift); <= 0 when not."""
        return self._lease.valid_for(monotonic())


def push(lock: object, held: object) -> None:
    _ENTERED.set((*_ENTERED.get(), (id(lock), held)))


def pop(lock: object) -> Any:
    stack = _ENTERED.get()
    key = id(lock)
    if stack and stack[-1][0] == key:  # the innermost block: the usual case
        _ENTERED.set(stack[:-1])
        return stack[-1][1]
    for i in range(len(stack) - 2, -1, -1):
        if stack[i][0] == key:
            _ENTERED.set(stack[:i] + stack[i + 1 :])
            return stack[i][1]
    raise RuntimeError("this lock was not entered with 'with' in this thread or task")


def exit_flow(
    kind: str,
    name: str,
    release: Flow[Any],
    error: type[BaseException] | None,
    lease: core.Lease | None = None,
) -> Flow[None]:
    """Release at the end of a ``with`` block (and mark ``lease`` released after the reply);
    when the lease was already gone, raise ``LockLost`` (unless the block is already raising
    its own error)."""
    try:
        yield from release
    except LockNotOwned as exc:
        lost = core.lost_in_block(kind, name, exc, lease)  # logged once per lease
        if error is None:
            raise lost from exc
    else:
        if lease is not None:
            lease.released = True


class SyncHandle:
    """A held lease (sync): ``with held:`` releases it on exit, through ``_exit_flow``."""

    _client: Any

    def _exit_flow(self, et: type[BaseException] | None) -> Flow[None]:
        raise NotImplementedError

    def __enter__(self: H) -> H:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        run_sync(self._client, self._exit_flow(et))


class AsyncHandle:
    """A held lease (asyncio): ``async with held:`` releases it on exit."""

    _client: Any

    def _exit_flow(self, et: type[BaseException] | None) -> Flow[None]:
        raise NotImplementedError

    async def __aenter__(self: H) -> H:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await run_async(self._client, self._exit_flow(et))


class SyncOwner:
    """``with lock:`` leaves through the handle its ``__enter__`` pushed (per thread): what the
    handle's ``__exit__`` does, without the extra call."""

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = pop(self)
        run_sync(held._client, held._exit_flow(et))


class AsyncOwner:
    """``async with lock:`` leaves through the handle its ``__aenter__`` pushed (per task)."""

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        held = pop(self)
        await run_async(held._client, held._exit_flow(et))
