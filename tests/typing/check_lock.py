"""User code around locks that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

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


@rp.locked("invoice:{invoice_id}", ttl=10)
def pay(invoice_id: int, *, amount: float = 0.0) -> str:
    return f"{invoice_id}:{amount}"


@rp.locked("report:{day}")
async def build_report(day: str) -> list[int]:
    return [len(day)]


def use_locked() -> None:
    check: Callable[..., str] = pay
    assert_type(pay(7, amount=2.5), str)
    assert_type(check(7), str)
    report = assert_type(build_report("2026-12-06"), Coroutine[Any, Any, list[int]])
    report.close()  # never awaited here: only its type matters


async def use_locked_async() -> None:
    assert_type(await build_report("2026-12-06"), list[int])
