"""User code around locks that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from typing_extensions import assert_type

import redispatterns as rp


def take(lock: rp.Lock) -> float | None:
    with lock as held:
        assert_type(held, rp.LockHandle)
        return held.ttl


async def take_async(lock: rp.AsyncLock) -> None:
    async with lock as held:
        assert_type(held, rp.AsyncLockHandle)
    maybe = await lock.acquire(blocking=False)
    assert_type(maybe, rp.AsyncLockHandle | None)
