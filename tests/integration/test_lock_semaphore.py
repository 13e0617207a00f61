"""Semaphore on every backend and flavour: the limit holds, leases expire (crash-safe), waiters wake."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from redispatterns.errors import LockLost, LockNotOwned, LockTimeout
from redispatterns.lock import AsyncSemaphore, AsyncSemaphoreLease, Semaphore, SemaphoreLease
from redispatterns.testing.plugin import Backend, Harness


def make(rp: Harness, name: str, limit: int, ttl: float = 5.0, **kw: Any) -> Any:
    return rp.pick(Semaphore, AsyncSemaphore)(name, limit, ttl, client=rp.client, **kw)


def test_at_most_limit_leases(rp: Harness) -> None:
    sem = make(rp, "api", 2)
    a = rp.call(sem.acquire())
    b = rp.call(sem.acquire())
    assert isinstance(a, rp.pick(SemaphoreLease, AsyncSemaphoreLease))
    assert rp.call(sem.count()) == 2
    assert rp.call(sem.acquire(blocking=False)) is None
    with pytest.raises(LockTimeout, match="all 2 leases"):
        rp.call(sem.acquire(timeout=0.1))
    rp.call(a.release())
    c = rp.call(sem.acquire(blocking=False))
    assert c is not None and a.released
    with pytest.raises(LockNotOwned, match="already released"):
        rp.call(a.release())
    for lease in (b, c):
        assert lease.valid_for() > 4
        lease.ensure_held()
        rp.call(lease.release())
    assert rp.call(sem.count()) == 0


def test_an_expired_lease_frees_its_slot_and_is_not_revived(rp: Harness) -> None:
    sem = make(rp, "crashy", 1, ttl=0.1)
    stale = rp.call(sem.acquire())
    time.sleep(0.15)  # the holder "crashed": its lease runs out on the server's clock
    with pytest.raises(LockLost):
        stale.ensure_held()
    # the fresh lease gets a TTL long enough to outlive the checks below on a busy machine
    fresh = rp.call(make(rp, "crashy", 1, ttl=30).acquire(blocking=False))
    assert fresh is not None
    with pytest.raises(LockNotOwned, match="not revived"):
        rp.call(stale.extend())
    with pytest.raises(LockNotOwned, match="expired"):
        rp.call(stale.release())
    assert rp.call(sem.count()) == 1  # the fresh lease is untouched
    rp.call(fresh.extend(2))
    assert fresh.valid_for() > 1.5
    rp.call(fresh.release())


def test_context_managers_and_validation(rp: Harness) -> None:
    sem = make(rp, "ctx", 1)
    if rp.is_async:

        async def go() -> int:
            async with sem:
                assert await sem.count() == 1
            async with await sem.acquire() as lease:
                assert isinstance(lease, AsyncSemaphoreLease)
            return int(await sem.count())

        assert rp.call(go()) == 0
    else:
        with sem:
            assert sem.count() == 1
        with sem.acquire() as lease:
            assert isinstance(lease, SemaphoreLease)
        assert sem.count() == 0
    cls = rp.pick(Semaphore, AsyncSemaphore)
    with pytest.raises(ValueError, match="at least 1"):
        cls("x", 0, client=rp.client)
    with pytest.raises(TypeError):
        cls("x", "3", client=rp.client)  # type: ignore[arg-type]
    assert "limit=1" in repr(sem)
    with pytest.raises(TypeError, match="blocking"):
        rp.call(sem.acquire(blocking=None))


def test_a_lease_lost_inside_the_block_reads_the_same_in_both_flavours(rp: Harness) -> None:
    """Drift fixed: leaving a block whose lease expired said "lock 'x' was lost ..." in sync and
    "semaphore 'x': lease lost ..." in asyncio; one message now, naming the semaphore."""
    sem = make(rp, "drift", 1, ttl=0.05)

    async def go() -> None:
        async with sem:
            await asyncio.sleep(0.2)

    def run() -> None:
        with sem:
            time.sleep(0.2)

    with pytest.raises(LockLost) as info:
        rp.call(go()) if rp.is_async else run()
    assert str(info.value).startswith("semaphore 'drift' was lost before the block ended: ")
    assert isinstance(info.value.__cause__, LockNotOwned)


def test_a_release_wakes_a_waiter(rp: Harness, backend: Backend) -> None:
    sem = make(rp, "wake", 1, ttl=5)
    held = rp.call(sem.acquire())
    woke: list[float] = []

    def waiter() -> None:
        Semaphore("wake", 1, 5, client=backend.sync_client()).acquire(timeout=4).release()
        woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    released = time.monotonic()
    rp.call(held.release())
    t.join()
    assert woke and woke[0] - released < 2.5  # the release signal, not the 5 s lease, woke it


@pytest.mark.slow
def test_threads_never_exceed_the_limit(backend: Backend) -> None:
    if backend.is_cluster and backend.kind is not None and not backend.kind.name.startswith("redis"):
        pytest.skip("one cluster kind is enough")
    client = backend.sync_client()
    sem = Semaphore("pool", 3, 5, client=client)
    active = "rp:test:{pool}:active"
    peak = "rp:test:{pool}:peak"
    script = client.register_script(
        "local n = redis.call('INCR', KEYS[1]) "
        "if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end return n"
    )

    def worker() -> None:
        for _ in range(25):
            with sem:
                script(keys=[active, peak])
                time.sleep(0.001)
                client.decr(active)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 < int(client.get(peak)) <= 3
    assert int(client.get(active)) == 0 and sem.count() == 0


@pytest.mark.slow
def test_tasks_never_exceed_the_limit(backend: Backend) -> None:
    if backend.is_cluster and backend.kind is not None and not backend.kind.name.startswith("redis"):
        pytest.skip("one cluster kind is enough")

    async def main() -> tuple[int, int]:
        client = backend.async_client()
        await client.ping()  # see test_lock.py: initialise an asyncio cluster client first
        sem = AsyncSemaphore("pool", 3, 5, client=client)
        state = {"active": 0, "peak": 0}

        async def worker() -> None:
            for _ in range(25):
                async with sem:
                    state["active"] += 1
                    state["peak"] = max(state["peak"], state["active"])
                    await asyncio.sleep(0.001)
                    state["active"] -= 1

        await asyncio.gather(*(worker() for _ in range(8)))
        left = await sem.count()
        await client.aclose()
        return state["peak"], left

    peak, left = asyncio.run(main())
    assert 1 < peak <= 3 and left == 0
