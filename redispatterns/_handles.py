"""What the lock, Redlock and semaphore shells share: ``with lock:`` bookkeeping and the exit.

``with lock:`` returns a handle but ``__exit__`` receives none, so the entered handles sit on a
context-local stack (per thread and per task, never shared). Leaving a block releases the
handle; a lease already gone when the block ends is one error for every kind and flavour.
"""

from __future__ import annotations

import contextvars
from typing import Any

from ._core import lock as core
from ._core.ops import Flow
from .errors import LockNotOwned

__all__ = ["exit_flow", "pop", "push"]

# (id(lock), handle) pairs entered with ``with lock:``; per thread and per task, never shared.
_ENTERED: contextvars.ContextVar[tuple[tuple[int, Any], ...]] = contextvars.ContextVar(
    "rp_lock_entered", default=()
)


def push(lock: object, held: object) -> None:
    _ENTERED.set((*_ENTERED.get(), (id(lock), held)))


def pop(lock: object) -> Any:
    stack = _ENTERED.get()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] == id(lock):
            _ENTERED.set(stack[:i] + stack[i + 1 :])
            return stack[i][1]
    raise RuntimeError("this lock was not entered with 'with' in this thread or task")


def exit_flow(kind: str, name: str, release: Flow[Any], error: type[BaseException] | None) -> Flow[None]:
    """Release at the end of a ``with`` block; when the lease was already gone, raise
    ``LockLost`` (unless the block is already raising its own error)."""
    try:
        yield from release
    except LockNotOwned as exc:
        if error is None:
            raise core.lost_in_block(kind, name, exc) from exc
