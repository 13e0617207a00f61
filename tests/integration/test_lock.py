"""Locks on every backend and flavour: ownership, fencing, expiry, renewal, waiting, @locked.

Process-heavy and timing-heavy tests run on a subset of backends (``_heavy``) and are marked slow.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import threading
import time
from typing import Any

import pytest
import redis

from redispatterns._core import lock as core
from redispatterns._core.keys import slot
from redispatterns._core.mount import Mount
from redispatterns.errors import LockLost, LockNotOwned, LockTimeout
from redispatterns.lock import AsyncLock, AsyncLockHandle, Lock, LockHandle, locked
from redispatterns.testing.plugin import Backend, Harness


def make(rp: Harness, name: str, ttl: float = 5.0, **kw: Any) -> Any:
    return rp.pick(Lock, AsyncLock)(name, ttl, client=rp.client, **kw)


def test_acquire_release_fence_and_state(rp: Harness) -> None:
    lock = make(rp, "job:1", ttl=5)
    assert rp.call(lock.locked()) is False
    assert rp.call(lock.remaining()) is None
    held = rp.call(lock.acquire())
    assert isinstance(held, rp.pick(LockHandle, AsyncLockHandle))
    assert held.fence == 1
    assert rp.call(lock.locked()) is True
    assert rp.call(held.owned()) is True
    assert 4.0 < rp.call(held.remaining()) <= 5.0
    assert 4.5 < held.valid_for() <= 5.0
    held.ensure_held()
    assert rp.call(lock.acquire(blocking=False)) is None
    rp.call(held.release())
    assert held.released and rp.call(lock.locked()) is False
    with pytest.raises(LockNotOwned, match="this holder released it"):
        rp.call(held.release())
    with pytest.raises(LockLost):
        held.ensure_held()
    again = rp.call(lock.acquire(blocking=False))
    assert again is not None and again.fence == 2  # fencing tokens only grow
    rp.call(again.release())


def test_keys_of_one_lock_share_a_slot_and_the_prefix(rp: Harness, backend: Backend) -> None:
    lock = rp.pick(Lock, AsyncLock)("order:9", mount=Mount(prefix="app:"), client=rp.client)
    held = rp.call(lock.acquire())
    rp.call(held.release())
    keys = lock.keys
    every = (keys.lock, keys.fence, keys.signal, keys.released, keys.waiters)
    assert len({slot(k) for k in every}) == 1
    assert all(k.startswith("app:lock:{order:9}") for k in every)
    c = backend.sync_client()
    # uncontended: the lock is deleted, the fence and the release latch remain, no signal was sent
    assert [c.exists(k) for k in every] == [0, 1, 0, 1, 0]
    assert c.pttl(keys.released) > 0 and c.pttl(keys.fence) == -1


def test_the_release_latch_keeps_the_rest_of_the_lease(rp: Harness, backend: Backend) -> None:
    """The uncontended release renames the lock key into the latch: our token, with what was
    left of our lease (a retry after a lost reply succeeds while the lease would have run)."""
    lock = make(rp, "latch", ttl=20)
    held = rp.call(lock.acquire())
    c = backend.sync_client()
    c.pexpire(lock.keys.lock, 5000)  # "the rest of the lease": 5 s of the 20
    rp.call(held.release())
    assert c.get(lock.keys.released) == held.token.encode()
    assert 4000 < c.pttl(lock.keys.released) <= 5000
    assert rp.run(core.release(lock.keys, held.token, 20000, name="latch")) is False  # the retry
    again = rp.call(lock.acquire(blocking=False))  # the next holder's release replaces the latch
    assert again is not None and again.fence == held.fence + 1
    rp.call(again.release())
    assert c.get(lock.keys.released) == again.token.encode()
    assert 19000 < c.pttl(lock.keys.released) <= 20000
    with pytest.raises(LockNotOwned, match="expired"):  # the older token is no longer remembered
        rp.run(core.release(lock.keys, held.token, 20000, name="latch"))


def _blocked_clients(client: Any, key: str) -> int:
    """Clients blocked (BLPOP) on the node that holds ``key``."""
    if hasattr(client, "get_node_from_key"):  # cluster
        info = client.info("clients", target_nodes=client.get_node_from_key(key))
        info = next(iter(info.values())) if isinstance(next(iter(info.values())), dict) else info
    else:
        info = client.info("clients")
    return int(info["blocked_clients"])


def test_a_release_hands_the_lock_to_the_woken_waiter(rp: Harness, backend: Backend) -> None:
    """With a waiter, a release reserves the lock for it: the releaser cannot barge back in."""
    if backend.is_fake:
        pytest.skip("fakeredis does not serve blocked BLPOP clients first, as Redis does")
    lock = make(rp, "fair", ttl=5)
    first = rp.call(lock.acquire())
    c = backend.sync_client()
    got: list[int] = []

    def waiter() -> None:
        held = Lock("fair", 5, client=backend.sync_client()).acquire(timeout=5)
        got.append(held.fence)
        held.release()

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 5
    while _blocked_clients(c, lock.keys.signal) < 1:  # the waiter failed once and now blocks
        assert time.monotonic() < deadline
        time.sleep(0.01)
    rp.call(first.release())
    again = rp.call(lock.acquire(timeout=5))  # the releaser wants it back at once
    t.join()
    assert got == [2] and again.fence == 3  # but the waiter had it first
    rp.call(again.release())


def test_stale_holder_cannot_release_or_extend_or_resurrect(rp: Harness, backend: Backend) -> None:
    """One Lock object shared by two holders (the redis-py asyncio bug, K1): ownership is per handle."""
    lock = make(rp, "shared", ttl=0.5)
    a = rp.call(lock.acquire())
    time.sleep(0.6)
    assert a.lost and a.valid_for() == pytest.approx(a.valid_for(), abs=1) and a.valid_for() <= 0
    b = rp.call(lock.acquire(blocking=False))
    assert b is not None and b.fence > a.fence
    rp.call(b.extend(30))  # b holds while a is refused, however slow the machine (a CI run saw
    # b's 0.15 s lease run out first, and a told its own lease expired instead)
    with pytest.raises(LockNotOwned, match="another owner"):
        rp.call(a.release())
    with pytest.raises(LockNotOwned, match="another owner"):
        rp.call(a.extend())
    assert rp.call(b.owned()) is True
    rp.call(b.release())
    with pytest.raises(LockNotOwned, match="not recreated"):
        rp.call(a.extend(1.0))
    assert backend.sync_client().exists(lock.keys.lock) == 0  # extend never recreates
    with pytest.raises(LockNotOwned, match="expired"):
        rp.call(a.release())


def test_release_is_idempotent_after_a_lost_reply(rp: Harness) -> None:
    lock = make(rp, "retry", ttl=2)
    held = rp.call(lock.acquire())
    # the first release ran but its reply was "lost": the caller retries with the same token
    assert rp.run(core.release(lock.keys, held.token, 2000, name="retry")) is True
    assert rp.run(core.release(lock.keys, held.token, 2000, name="retry")) is False
    other = rp.call(lock.acquire(blocking=False))
    assert other is not None
    with pytest.raises(LockNotOwned):  # a token that never released stays refused
        rp.run(core.release(lock.keys, "not-mine", 2000, name="retry"))
    rp.call(other.release())


def test_extend_moves_the_deadline(rp: Harness) -> None:
    lock = make(rp, "ext", ttl=0.5)
    held = rp.call(lock.acquire())
    rp.call(held.extend(3))
    assert held.ttl == 3 and held.valid_for() > 2.5
    assert rp.call(held.remaining()) > 2.5
    with pytest.raises(ValueError, match="positive"):
        rp.call(held.extend(0))
    rp.call(held.release())


def test_timeout_and_non_blocking(rp: Harness) -> None:
    lock = make(rp, "busy", ttl=5)
    held = rp.call(lock.acquire())
    t0 = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        rp.call(lock.acquire(timeout=0.2))
    assert info.value.timeout == 0.2 and info.value.name == "busy"
    assert time.monotonic() - t0 < 4  # bounded by the timeout, not the holder's 5 s lease
    with pytest.raises(LockTimeout):
        rp.call(lock.acquire(timeout=0))
    rp.call(held.release())


def test_expiry_wakes_a_waiter_without_a_release(rp: Harness) -> None:
    lock = make(rp, "expire", ttl=0.3)
    rp.call(lock.acquire())
    waiter = make(rp, "expire", ttl=5)  # its own lease outlives a loaded machine's release
    t0 = time.monotonic()
    second = rp.call(waiter.acquire(timeout=3))
    waited = time.monotonic() - t0
    assert 0.2 < waited < 2.5
    rp.call(second.release())


def test_a_release_between_a_failed_try_and_the_block_is_not_lost(rp: Harness, backend: Backend) -> None:
    """The injected hook releases the holder right after the waiter's failed attempt."""
    lock = Lock("handover", 5, client=backend.sync_client())
    holder = lock.acquire()
    from redispatterns._core.ops import BlockingPop
    from redispatterns._runner import blocker

    _, max_block = blocker(rp.client)
    calls: list[float] = []

    def wait(flow: Any) -> Any:  # the acquire flow, with the hook before its first block
        op, reply = next(flow), None
        while True:
            if isinstance(op, BlockingPop):
                if not calls:
                    holder.release()  # the release lands before the waiter blocks
                calls.append(min(op.seconds, max_block))
            try:
                reply = yield op
            except Exception as exc:
                op = flow.throw(exc)
            else:
                try:
                    op = flow.send(reply)
                except StopIteration as done:
                    return done.value

    t0 = time.monotonic()
    grant = rp.run(wait(core.acquire(lock.keys, "waiter", 5000, name="handover")))
    assert grant is not None and grant.fence == 2
    assert calls and calls[0] >= min(4.0, max_block)  # it blocked with the holder's 5 s bound ...
    assert time.monotonic() - t0 < 2.5  # ... and the signal woke it at once


def test_context_managers(rp: Harness, backend: Backend) -> None:
    lock = make(rp, "ctx", ttl=5)
    if rp.is_async:

        async def go() -> int:
            async with lock as held:
                assert await lock.locked() and held.fence == 1
            assert not await lock.locked()
            async with await lock.acquire() as handle:  # a handle is a context manager too
                assert handle.fence == 2
            async with lock as again:
                return int(again.fence)

        assert rp.call(go()) == 3
    else:
        with lock as held:
            assert lock.locked() and held.fence == 1
        assert not lock.locked()
        with lock.acquire() as held2:
            assert held2.fence == 2
        assert not lock.locked()


def test_with_block_that_outlived_its_lease_raises_lock_lost(rp: Harness, backend: Backend) -> None:
    lock = make(rp, "outlived", ttl=0.1)

    async def body_async() -> None:
        async with lock:
            await asyncio.sleep(0.2)
            await AsyncLock("outlived", 5, client=rp.client).acquire()

    def body_sync() -> None:
        with lock:
            time.sleep(0.2)
            Lock("outlived", 5, client=rp.client).acquire()

    with pytest.raises(LockLost, match="lost before the block ended"):
        rp.call(body_async()) if rp.is_async else body_sync()

    # an exception from the body wins over the lost lease
    async def failing_async() -> None:
        async with make(rp, "outlived2", ttl=0.05):
            await asyncio.sleep(0.1)
            raise ZeroDivisionError

    def failing_sync() -> None:
        with make(rp, "outlived2", ttl=0.05):
            time.sleep(0.1)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        rp.call(failing_async()) if rp.is_async else failing_sync()


def test_fenced_writes_refuse_a_stale_holder(rp: Harness) -> None:
    lock = make(rp, "acct:7", ttl=0.1)
    old = rp.call(lock.acquire())
    time.sleep(0.15)
    new = rp.call(lock.acquire())
    rp.call(new.fenced_set("balance", {"v": 2}))
    with pytest.raises(LockLost, match="refused"):
        rp.call(old.fenced_set("balance", {"v": 1}))
    assert rp.call(lock.fenced_get("balance")) == {"v": 2}
    assert rp.call(lock.fenced_get("missing")) is None
    rp.call(new.fenced_set("balance", {"v": 3}, ttl=5))
    assert rp.call(lock.fenced_get("balance")) == {"v": 3}


@pytest.mark.slow
def test_auto_renew_keeps_the_lock_through_five_ttls(rp: Harness, backend: Backend) -> None:
    _timing(backend)
    ttl = 0.6  # renewals every ~0.2 s: a loaded CI machine must not stall a whole lease
    lost: list[Any] = []
    lock = make(rp, "renewed", ttl=ttl, auto_renew=True, on_lost=lost.append)
    held = rp.call(lock.acquire())
    c = backend.sync_client()
    lowest = ttl * 1000
    end = time.monotonic() + 5 * ttl
    while time.monotonic() < end:
        if rp.is_async:
            rp.call(asyncio.sleep(0.03))  # the renewal task runs while the loop sleeps
        else:
            time.sleep(0.03)
        lowest = min(lowest, c.pttl(lock.keys.lock))
    assert lowest > 0, "the lease lapsed"
    assert not held.lost and not lost
    assert rp.call(held.owned()) is True
    rp.call(held.release())
    assert not rp.call(lock.locked())


def test_a_dropped_auto_renewed_handle_is_not_renewed_forever(rp: Harness) -> None:
    if rp.backend.is_fake:  # seen with sync clients, and with asyncio ones on Python 3.13
        pytest.skip("fakeredis's Lua runtime can keep the caller's frame (and so the handle) alive")
    lock = make(rp, "dropped", ttl=0.4, auto_renew=True)
    held = rp.call(lock.acquire())
    assert held is not None and rp.call(lock.locked())
    del held  # never released
    gc.collect()
    free, deadline = False, time.monotonic() + 5
    while not free and time.monotonic() < deadline:
        rp.call(asyncio.sleep(0.05)) if rp.is_async else time.sleep(0.05)
        free = not rp.call(lock.locked())
    assert free, "the renewal of a collected handle kept the lock forever"


def test_renewal_reports_a_lost_lease(rp: Harness, backend: Backend) -> None:
    lost: list[Any] = []
    lock = make(rp, "taken", ttl=0.3, auto_renew=True, on_lost=lost.append)
    held = rp.call(lock.acquire())
    backend.sync_client().set(lock.keys.lock, "intruder", px=5000)  # someone took it over
    deadline = time.monotonic() + 2
    while not lost and time.monotonic() < deadline:
        rp.call(asyncio.sleep(0.02)) if rp.is_async else time.sleep(0.02)
    assert lost == [held]
    assert held.lost
    with pytest.raises(LockLost, match="was lost"):
        held.ensure_held()
    assert backend.sync_client().get(lock.keys.lock) == b"intruder"


def test_async_renewal_loss_cancels_the_guarded_task(backend: Backend) -> None:
    async def main() -> str:
        client = backend.async_client()
        lock = AsyncLock("guarded", 0.3, client=client, auto_renew=True, cancel_on_lost=True)

        async def work() -> str:
            held = await lock.acquire()
            await client.set(lock.keys.lock, "intruder", px=5000)
            try:
                await asyncio.sleep(3)
            except asyncio.CancelledError:
                assert held.lost
                return "cancelled"
            return "finished"

        result = await asyncio.create_task(work())
        await client.aclose()
        return result

    assert asyncio.run(main()) == "cancelled"


def test_validation(rp: Harness) -> None:
    cls = rp.pick(Lock, AsyncLock)
    with pytest.raises(ValueError, match="always expires"):
        cls("x", 0, client=rp.client)
    with pytest.raises(TypeError):
        cls(3, client=rp.client)
    with pytest.raises(ValueError, match="braces"):
        cls("a{b}", client=rp.client)
    with pytest.raises(TypeError, match="on_lost"):
        cls("x", on_lost=3, client=rp.client)
    with pytest.raises(ValueError):
        cls("x", timeout=-1, client=rp.client)
    lock = cls("x", client=rp.client)
    with pytest.raises(TypeError, match="blocking"):
        rp.call(lock.acquire(blocking="yes"))
    read_only = cls("x", mount=Mount(mode="read"), client=rp.client)
    with pytest.raises(PermissionError):
        rp.call(read_only.acquire())
    assert "x" in repr(lock)
    other = rp.pick(AsyncLock, Lock)
    with pytest.raises(TypeError):
        other("x", client=rp.client)


# --------------------------------------------------------------------------- @locked


def test_locked_decorator_sync_and_async(rp: Harness, backend: Backend) -> None:
    c = backend.sync_client()

    @locked("inv:{invoice_id}", ttl=5, client=rp.client)
    async def apay(invoice_id: int, amount: int = 1) -> int:
        assert await AsyncLock(f"inv:{invoice_id}", client=rp.client).locked()
        return invoice_id * amount

    @locked("inv:{invoice_id}", ttl=5, client=rp.client)
    def pay(invoice_id: int, amount: int = 1) -> int:
        assert Lock(f"inv:{invoice_id}", client=rp.client).locked()
        return invoice_id * amount

    fn: Any = apay if rp.is_async else pay
    assert rp.call(fn(7, amount=2)) == 14
    assert fn.__name__ in ("pay", "apay")
    assert c.get("rp:lock:{inv:7}:fence") == b"1"


def test_locked_rejects_bad_templates(client: Any) -> None:
    @locked("inv:{nope}", client=client)
    def f(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="nope"):
        f(1)
    with pytest.raises(TypeError):
        locked("")
    with pytest.raises(ValueError):
        locked("x", ttl=-1)

    @locked("plain", client=client, ttl=1)
    def g() -> str:
        return "ok"

    assert g() == "ok"


# --------------------------------------------------------------------------- contention


def _heavy(backend: Backend) -> None:
    """Threads/tasks with real contention: fakeredis, every standalone kind, one cluster kind."""
    if backend.is_cluster and backend.kind is not None and backend.kind.name != _primary_kind():
        pytest.skip("heavy contention runs on one cluster kind only")


@functools.cache
def _primary_kind() -> str:
    from redispatterns.testing.servers import find_server_kinds

    kinds = find_server_kinds()
    return kinds[0].name if kinds else ""


def _timing(backend: Backend) -> None:
    """Timing-heavy tests (sleeps of several leases): the first server kind, standalone and cluster."""
    if backend.is_fake or (backend.kind is not None and backend.kind.name != _primary_kind()):
        pytest.skip("timing-heavy: runs on the first server kind only (standalone and cluster)")


def _critical(client: Any, counter: str, intervals: list[tuple[int, int]] | None) -> None:
    if intervals is not None:
        t0 = _server_us(client)
    v = int(client.get(counter) or 0)
    client.set(counter, v + 1)
    if intervals is not None:
        intervals.append((t0, _server_us(client)))


def _server_us(client: Any) -> int:
    s, us = client.time()
    return int(s) * 1_000_000 + int(us)


@pytest.mark.slow
def test_threads_sharing_one_lock_never_lose_an_update(backend: Backend) -> None:
    _heavy(backend)
    client = backend.sync_client()
    lock = Lock("counter", 5, client=client)
    counter = "rp:test:{counter}:n"
    intervals: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(200):
                with lock:
                    _critical(client, counter, intervals)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert int(client.get(counter)) == 1600
    intervals.sort()
    overlaps = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    assert not overlaps, f"critical sections overlapped: {overlaps[:3]}"


@pytest.mark.slow
def test_without_the_lock_the_race_is_real(standalone_url: str) -> None:
    """The control experiment, on the first real server kind found."""
    client: Any = redis.Redis.from_url(standalone_url)
    counter = "rp:test:{counter}:n"

    def worker() -> None:
        for _ in range(200):
            _critical(client, counter, None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(client.get(counter)) < 1600  # lost updates: what the lock prevents
    client.close()


@pytest.mark.slow
def test_tasks_sharing_one_lock_never_lose_an_update(backend: Backend) -> None:
    _heavy(backend)
    if backend.is_fake:
        pytest.skip("fakeredis runs the threads form; tasks run on real servers")

    async def main() -> int:
        client = backend.async_client()
        lock = AsyncLock("counter", 5, client=client)
        counter = "rp:test:{counter}:n"

        async def worker() -> None:
            for _ in range(200):
                async with lock:
                    v = int(await client.get(counter) or 0)
                    await asyncio.sleep(0)  # invite the race
                    await client.set(counter, v + 1)

        # redis-py 8.1's asyncio RedisCluster fails ("Connection closed by server") when many
        # commands open connections while it initialises lazily: initialise it first.
        await client.ping()
        await asyncio.gather(*(worker() for _ in range(8)))
        n = int(await client.get(counter))
        await client.aclose()
        return n

    assert asyncio.run(main()) == 1600


def test_threads_sharing_one_lock_object_on_every_backend(rp: Harness, backend: Backend) -> None:
    """A lighter form of the contention test for every backend x flavour (one Lock, many users)."""
    lock = make(rp, "light", ttl=5)
    counter = "rp:test:{light}:n"
    c = backend.sync_client()
    if rp.is_async:

        async def go() -> None:
            async def one() -> None:
                for _ in range(10):
                    async with lock:
                        v = int(await rp.client.get(counter) or 0)
                        await asyncio.sleep(0)
                        await rp.client.set(counter, v + 1)

            await asyncio.gather(*(one() for _ in range(4)))

        rp.call(go())
    else:

        def one() -> None:
            for _ in range(10):
                with lock:
                    _critical(rp.client, counter, None)

        ts = [threading.Thread(target=one) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert int(c.get(counter)) == 40


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_waiter_cache_does_not_keep_clients_alive(backend: Backend, flavour: str) -> None:
    import gc
    import weakref

    from redispatterns._runner import blocker

    if backend.is_cluster:
        pytest.skip("the cache is the same for every client type; gc.collect() is slow")

    async def build_async() -> Any:  # asyncio clients are made inside a loop
        return backend.async_client()

    client = backend.sync_client() if flavour == "sync" else asyncio.run(build_async())
    blocker(client)
    ref = weakref.ref(client)
    backend._sync.clear()  # the fixture's own references
    backend._async.clear()
    del client
    gc.collect()
    assert ref() is None


def test_a_lease_loss_is_logged_once_on_the_lock_logger(
    rp: Harness, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Auto-renewal finding the lease gone logs one WARNING on ``redispatterns.lock``; the block
    that then ends raises LockLost without logging the same loss again. A block that outlived a
    lease it never renewed logs once too."""
    import logging

    caplog.set_level(logging.WARNING, logger="redispatterns.lock")
    lost: list[Any] = []
    lock = make(rp, "logged", ttl=0.3, auto_renew=True, on_lost=lost.append)

    async def renewed_async() -> None:
        async with lock:
            backend.sync_client().set(lock.keys.lock, "intruder", px=5000)
            for _ in range(150):  # the renewal task runs while this one sleeps
                if lost:
                    break
                await asyncio.sleep(0.02)

    def renewed_sync() -> None:
        with lock:
            backend.sync_client().set(lock.keys.lock, "intruder", px=5000)
            deadline = time.monotonic() + 3
            while not lost and time.monotonic() < deadline:
                time.sleep(0.02)

    with pytest.raises(LockLost):
        rp.call(renewed_async()) if rp.is_async else renewed_sync()
    records = [r for r in caplog.records if r.name == "redispatterns.lock"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert "'logged' lost" in records[0].getMessage()
    assert records[0].levelno == logging.WARNING

    caplog.clear()
    short = make(rp, "logged-short", ttl=0.05)

    async def outlived_async() -> None:
        async with short:
            await asyncio.sleep(0.12)

    def outlived_sync() -> None:
        with short:
            time.sleep(0.12)

    with pytest.raises(LockLost):
        rp.call(outlived_async()) if rp.is_async else outlived_sync()
    messages = [r.getMessage() for r in caplog.records if r.name == "redispatterns.lock"]
    assert messages == ["lock 'logged-short' lost before its block ended: " + messages[0].split(": ", 1)[1]]


def test_a_lock_built_per_use_reuses_the_settings_it_checked() -> None:
    """On the default mount, a ``Lock`` built again with the same (name, ttl, timeout) copies
    what the first one checked and keyed; an argument of the wrong type is still refused, however
    equal its value (``True`` is not ``1``), and each flavour keeps its own client binding."""
    first = Lock("per-use:settings", 1)
    again = Lock("per-use:settings", 1.0)
    assert again.keys is first.keys
    assert (again.name, again.ttl, again.timeout, again.auto_renew) == ("per-use:settings", 1.0, None, False)
    for bad in ({"ttl": True}, {"ttl": 1, "timeout": True}, {"ttl": float("nan")}):
        with pytest.raises((TypeError, ValueError)):
            Lock("per-use:settings", **bad)
    with pytest.raises(ValueError, match="braces"):
        Lock("per-use:{settings}", 1)
    tasks = AsyncLock("per-use:settings", 1)
    assert tasks._ns.asyncio and not first._ns.asyncio and tasks.cancel_on_lost is False
    assert Lock("per-use:settings", 2).ttl == 2.0 and Lock("per-use:settings", 1, timeout=3).timeout == 3.0


def test_a_lock_built_per_use_holds_and_fences_like_a_prebuilt_one(rp: Harness) -> None:
    """``with Lock(name):`` built afresh each time, on the default client: the fence grows by one
    per block, and the lock is free after each."""
    import redispatterns

    if rp.backend.is_fake or rp.backend.is_cluster or not rp.backend.url:
        pytest.skip("the default client is configured from a standalone server's URL")
    redispatterns.configure(rp.backend.url)
    try:
        fences = _per_use_fences(rp)
    finally:
        redispatterns.configure()
    assert fences == [fences[0], fences[0] + 1, fences[0] + 2]


def _per_use_fences(rp: Harness) -> list[int]:
    make: Any = rp.pick(Lock, AsyncLock)

    async def enter_async() -> int:
        async with make("per-use:blocks", 5) as held:
            return int(held.fence)

    def enter() -> int:
        with make("per-use:blocks", 5) as held:
            return int(held.fence)

    fences = []
    for _ in range(3):
        fences.append(rp.call(rp.pick(enter, enter_async)()))
        assert not rp.call(make("per-use:blocks", 5).locked())
    return fences
