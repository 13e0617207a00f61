"""Redlock over N independent masters: ``Redlock`` / ``AsyncRedlock`` and their held handles.

A round is a fan-out op (:class:`~redispatterns._core.ops.FanOut`) that the runner executes:
the node flows run in parallel, each bounded by ``node_timeout``; the quorum and validity
math is in :mod:`redispatterns._core.redlock`. Not a substitute for fencing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from . import _handles
from ._core import lock as core
from ._core import redlock as rl
from ._core import validate
from ._core.keys import Keyspace
from ._core.mount import DEFAULT_PREFIX
from ._core.ops import Flow
from ._runner import monotonic, run_async, run_sync
from .errors import LockLost

__all__ = ["AsyncRedlock", "AsyncRedlockHandle", "Redlock", "RedlockHandle"]

H = TypeVar("H")


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
        self._masters = rl.Masters(tuple(clients), self.key, self.node_timeout)

    def _acquire_flow(self) -> tuple[str, Flow[rl.RedlockVote]]:
        token = secrets.token_hex(16)
        flow = rl.redlock_acquire(
            self._masters, token, core.to_ms(self.ttl), name=self.name, retries=self.retries,
            retry_delay=self.retry_delay, timeout=self.timeout,
        )  # fmt: skip
        return token, flow

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} nodes={len(self.clients)} ttl={self.ttl}s>"


class _RedlockHeldBase:
    def __init__(self, lock: _RedlockBase[Any], token: str, vote: rl.RedlockVote) -> None:
        self.name = lock.name
        self.token = token
        self.votes = vote.votes
        self.validity_ms = vote.validity_ms
        self._lock = lock
        self._deadline = vote.deadline
        self._released = False

    def valid_for(self) -> float:
        """Seconds the quorum lease is surely still ours (validity - time since the round)."""
        return 0.0 if self._released else self._deadline - monotonic()

    def ensure_held(self) -> None:
        if self.valid_for() <= 0:
            raise LockLost(f"Redlock {self.name!r}: the validity ran out", name=self.name)

    def _extend_flow(self) -> Flow[None]:
        self.ensure_held()
        lock = self._lock
        vote = yield from rl.redlock_extend(lock._masters, self.token, core.to_ms(lock.ttl), name=self.name)
        self.votes, self.validity_ms = vote.votes, vote.validity_ms
        self._deadline = vote.deadline

    def _release_flow(self) -> Flow[None]:
        yield from rl.redlock_release(self._lock._masters, self.token)
        self._released = True


class RedlockHandle(_RedlockHeldBase):
    """A Redlock held by a majority; ``valid_for()`` is the remaining safe budget."""

    def release(self) -> None:
        run_sync(None, self._release_flow())

    def extend(self) -> None:
        """Extend on every master; ``LockNotOwned`` unless a majority still held it."""
        run_sync(None, self._extend_flow())

    def __enter__(self) -> RedlockHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncRedlockHandle(_RedlockHeldBase):
    """The asyncio twin of :class:`RedlockHandle`."""

    async def release(self) -> None:
        await run_async(None, self._release_flow())

    async def extend(self) -> None:
        await run_async(None, self._extend_flow())

    async def __aenter__(self) -> AsyncRedlockHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Redlock(_RedlockBase[RedlockHandle]):
    """Redlock over N independent masters (sync clients): a majority within the validity.

    Requests go to every master in parallel, each bounded by ``node_timeout``; the lease is
    valid for ``ttl - elapsed - (ttl·1% + 2 ms)``; a failed round is released on every master
    and retried after a random delay. Not a substitute for fencing (see the README's Lock section).
    """

    def acquire(self) -> RedlockHandle:
        """Acquire on a majority; ``LockTimeout`` after the retries."""
        token, flow = self._acquire_flow()
        return RedlockHandle(self, token, run_sync(None, flow))

    def __enter__(self) -> RedlockHandle:
        held = self.acquire()
        _handles.push(self, held)
        return held

    def __exit__(self, *exc: object) -> None:
        _handles.pop(self).release()

    def close(self) -> None:
        """Nothing to free: the fan-out threads are the runner's, the clients are the caller's."""


class AsyncRedlock(_RedlockBase[AsyncRedlockHandle]):
    """The asyncio twin of :class:`Redlock` (asyncio clients; requests gathered)."""

    async def acquire(self) -> AsyncRedlockHandle:
        token, flow = self._acquire_flow()
        return AsyncRedlockHandle(self, token, await run_async(None, flow))

    async def __aenter__(self) -> AsyncRedlockHandle:
        held = await self.acquire()
        _handles.push(self, held)
        return held

    async def __aexit__(self, *exc: object) -> None:
        await _handles.pop(self).release()

    async def close(self) -> None:
        """Nothing to free (the clients are the caller's); kept for symmetry with ``Redlock``."""
