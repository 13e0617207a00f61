"""The runners' ComputeEach (a stream consumer's handler over a batch): real threads and tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from redispatterns._core.ops import NOT_RUN, ComputeEach
from redispatterns._runner import _each_async, _each_sync


class Probe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[Any, int] = {}
        self.most = 0
        self.same_key_overlap = False
        self.done: list[int] = []
        self.overlapped = threading.Event()  # set once two calls ran at the same time

    def enter(self, key: Any) -> None:
        with self.lock:
            self.active[key] = self.active.get(key, 0) + 1
            self.most = max(self.most, sum(self.active.values()))
            if self.most > 1:
                self.overlapped.set()
            self.same_key_overlap |= self.active[key] > 1

    def leave(self, key: Any, i: int) -> None:
        with self.lock:
            self.active[key] -= 1
            self.done.append(i)


def _sync_fn(p: Probe) -> Any:
    def fn(item: tuple[int, str]) -> None:
        i, key = item
        p.enter(key)
        if i == 0:  # the first call waits (up to 5 s) for another to start: overlap, not timing
            p.overlapped.wait(5)
        time.sleep(0.01)
        p.leave(key, i)
        if i == 3:
            raise ValueError("three")

    return fn


def _async_fn(p: Probe) -> Any:
    async def fn(item: tuple[int, str]) -> None:
        i, key = item
        p.enter(key)
        for _ in range(500):  # the first call waits (up to 5 s) for another to start
            if i != 0 or p.overlapped.is_set():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        p.leave(key, i)
        if i == 3:
            raise ValueError("three")

    return fn


ITEMS = [(i, "ab"[i % 2]) for i in range(12)]


def _check(out: list[Any], p: Probe, *, keyed: bool) -> None:
    assert [type(o).__name__ for o in out] == ["NoneType"] * 3 + ["ValueError"] + ["NoneType"] * 8
    if keyed:
        assert not p.same_key_overlap and p.most == 2  # the two keys ran at once, never one key twice
        for k in "ab":
            order = [i for i in p.done if ITEMS[i][1] == k]
            assert order == sorted(order)
    else:
        assert p.most >= 2


def test_sync_threads_overlap_and_keys_serialise() -> None:
    p = Probe()
    _check(_each_sync(ComputeEach(_sync_fn(p), ITEMS, 6)), p, keyed=False)
    p = Probe()
    _check(_each_sync(ComputeEach(_sync_fn(p), ITEMS, 6, key=lambda it: it[1])), p, keyed=True)


def test_async_tasks_overlap_and_keys_serialise() -> None:
    p = Probe()
    _check(asyncio.run(_each_async(ComputeEach(_async_fn(p), ITEMS, 6))), p, keyed=False)
    p = Probe()
    _check(asyncio.run(_each_async(ComputeEach(_async_fn(p), ITEMS, 6, key=lambda it: it[1]))), p, keyed=True)


def test_stop_and_a_failing_key() -> None:
    stop: list[bool] = []  # the flag: non-empty once a stop is asked

    def fn(item: int) -> None:
        if item == 2:
            stop.append(True)

    out = _each_sync(ComputeEach(fn, list(range(5)), 1, stop=stop))
    assert out == [None, None, None, NOT_RUN, NOT_RUN]
    stop.clear()
    out = _each_sync(ComputeEach(fn, list(range(5)), 1, key=lambda i: i, stop=stop))
    assert out == [None, None, None, NOT_RUN, NOT_RUN]

    def key(i: int) -> Any:
        if i == 1:
            raise LookupError("no key")
        return [] if i == 2 else i  # an unhashable key fails its item too

    out = _each_sync(ComputeEach(lambda i: None, list(range(4)), 2, key=key))
    assert out[0] is None and isinstance(out[1], LookupError) and isinstance(out[2], TypeError)
    assert out[3] is None
    out = asyncio.run(_each_async(ComputeEach(lambda i: None, list(range(4)), 2, key=key)))
    assert isinstance(out[1], LookupError) and out[3] is None


def test_in_order_async_awaits_what_a_plain_function_returns() -> None:
    """The one-at-a-time asyncio path awaits a coroutine, a future or any awaitable a plain
    function returns (``lambda m: handle(m)``), records the failure of one that raises, and
    leaves plain results (None, tuples, ...) alone."""
    done: list[Any] = []

    async def handle(i: int) -> None:
        await asyncio.sleep(0)
        if i == 4:
            raise ValueError("four")
        done.append(("coro", i))

    class Later:
        def __init__(self, i: int) -> None:
            self.i = i

        def __await__(self) -> Any:
            yield from asyncio.sleep(0).__await__()
            done.append(("awaitable", self.i))

    async def go() -> list[Any]:
        loop = asyncio.get_running_loop()

        def fn(i: int) -> Any:
            if i % 4 == 0:
                return handle(i)
            if i % 4 == 1:
                return Later(i)
            if i % 4 == 2:
                f = loop.create_future()
                loop.call_soon(f.set_result, None)
                f.add_done_callback(lambda _f: done.append(("future", i)))
                return f
            return (i, "plain")

        return await _each_async(ComputeEach(fn, list(range(8)), 1))

    out = asyncio.run(go())
    assert [type(o).__name__ for o in out] == ["NoneType"] * 4 + ["ValueError"] + ["NoneType"] * 3
    assert sorted(done) == sorted(
        [("coro", 0), ("awaitable", 1), ("future", 2), ("awaitable", 5), ("future", 6)]
    )
