"""Rate-limit checks vs the floor: a trivial one-key EVALSHA sent by hand with redis-py.

Each case spreads its calls over 1,000 subjects (as real traffic does; 2,000 for the multi case,
whose 10/s log would deny a third of them), so the admitted path is measured; two cases measure
a hot subject that is always denied (one policy, and two). Sync limiters run on the client
``connect()`` gives; async ones on a plain ``redis.asyncio`` client, against a floor on another
plain ``redis.asyncio`` client. Peers in the same run: ``limits`` (moving window, fixed window,
sliding-window counter), walrus's Lua limiter and the naive 4-command MULTI limiter.

Beside the ratio, each limiter case notes its **server CPU per check** (``INFO commandstats``:
``usec_per_call`` of EVALSHA, or of EXEC for a MULTI) and the checks per second one Redis core
sustains at that cost (``1e6 / usec``). The sliding log is measured at limit 10, 1 000 and
100 000 (a subject holding that many entries: admitted and denied checks, memory per subject).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns._core.ratelimit import MODE_HIT
from redispatterns.client import connect, connect_async
from redispatterns.ratelimit import (
    AsyncFixedWindowLimiter,
    AsyncMultiLimiter,
    AsyncSlidingCounterLimiter,
    AsyncSlidingWindowLimiter,
    AsyncTokenBucketLimiter,
    FixedWindowLimiter,
    MultiLimiter,
    Policy,
    SlidingCounterLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
)

TRIVIAL = "return 1"
SUBJECTS = 1000
# the multi case's 10/s log, hit over 1 000 subjects at 10-20k checks/s, denied about a third of
# the calls (a denial is the general evaluation: half again an admitted hit's server time), so
# it spreads over 2 000: each is hit every 2 000 calls (well under 10 a second, timed in blocks
# beside the floor) and again before its 1 s keys expire. Its server CPU is measured after one
# untimed pass over them (else it would count each subject's first hit, which creates its keys)
CASE_SUBJECTS = {"multi": 2000}
CPU_CALLS = 2000
CPU_ROUNDS = 3
LOG_LIMITS = (10, 1_000, 100_000)


def _subjects(prefix: str, n: int = SUBJECTS) -> Callable[[], str]:
    it = itertools.cycle([f"{prefix}{i}" for i in range(n)])
    return lambda: next(it)


def _memory(client: Any, keys: tuple[str, ...]) -> int:
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)


def _memory_notes(url: str) -> dict[str, str]:
    """Bytes per subject after 10 and 100 admitted hits."""
    c = connect(url)
    out = {}
    cases: list[tuple[str, Any]] = [
        ("sliding 100/60s", SlidingWindowLimiter(100, 60, client=c, name="mem")),
        ("token bucket 100/60s", TokenBucketLimiter(100, 100, per=60, client=c, name="mem")),
        ("fixed 100/60s", FixedWindowLimiter(100, 60, client=c, name="mem")),
        ("sliding counter 100/60s", SlidingCounterLimiter(100, 60, client=c, name="mem")),
        ("10/s + 1000/h", MultiLimiter([Policy.token_bucket(10), Policy.token_bucket(1000, per=3600)],
                                       client=c, name="mem")),
    ]  # fmt: skip
    for label, lim in cases:
        for n in (10, 100):
            lim.reset("m")
            for _ in range(n):
                lim.hit("m")
            size = _memory(c, lim.keys("m"))
            out[f"{label} x{n}"] = f"{size} B" + (
                f" ({size / n:.0f} B/entry)" if label.startswith("sliding 100") else ""
            )
        lim.reset("m")
    return out


def _server_usec(raw: redis.Redis, run: Callable[[int], Any], warm: int = 0) -> float | None:
    """Server CPU per check: reset the command stats, make ``CPU_CALLS`` checks, read them back."""
    if warm:
        run(warm)
    raw.config_resetstat()
    run(CPU_CALLS)
    stats = raw.info("commandstats")
    for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_exec"):
        if name in stats and stats[name]["calls"] >= CPU_CALLS:
            return float(stats[name]["usec"]) / CPU_CALLS
    return None


def _cpu_note(usec: float | None) -> str:
    if usec is None:
        return "server CPU: n/a"
    return f"server CPU {usec:.2f} µs/check = {1e6 / usec / 1000:.0f}k checks/s per core"


def _sync_runner(fn: Callable[[], Any]) -> Callable[[int], Any]:
    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def _async_runner(fn: Callable[[], Awaitable[Any]]) -> Callable[[int], Any]:
    def run(n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await fn()

        asyncio.run(go())

    return run


def _hits(lim: Any, subjects: Callable[[], str]) -> Callable[[], Any]:
    return lambda: lim.hit(subjects())


def _by_hand(raw: redis.Redis, lim: Any, subjects: Callable[[], str]) -> Callable[[], Any]:
    """The exact EVALSHA the limiter sends (same script, same ARGV shape), sent with redis-py."""
    op = next(lim._flow("by-hand", 1, MODE_HIT))
    raw.script_load(op.script.source)
    sha, args, n = op.script.sha, op.args, len(op.keys)
    parts = [(k.decode() if isinstance(k, bytes) else k).split("{by-hand}") for k in op.keys]

    def call() -> Any:
        s = "{byhand:" + subjects() + "}"
        return raw.evalsha(sha, n, *(a + s + b for a, b in parts), *args)

    return call


def _async_by_hand(url: str, raw: redis.Redis, lim: Any, subjects: Callable[[], str]) -> Callable[[], Any]:
    """:func:`_by_hand` on a plain ``redis.asyncio`` client (one per event loop)."""
    op = next(lim._flow("by-hand", 1, MODE_HIT))
    raw.script_load(op.script.source)
    sha, args, n = op.script.sha, op.args, len(op.keys)
    parts = [(k.decode() if isinstance(k, bytes) else k).split("{by-hand}") for k in op.keys]
    clients: dict[int, Any] = {}

    async def call() -> Any:
        loop = id(asyncio.get_running_loop())
        if loop not in clients:
            clients[loop] = redis.asyncio.Redis.from_url(url)
        s = "{byhand:" + subjects() + "}"
        return await clients[loop].evalsha(sha, n, *(a + s + b for a, b in parts), *args)

    return call


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    raw = redis.Redis.from_url(url)
    sha = raw.script_load(TRIVIAL)
    mem = _memory_notes(url)
    note = "memory per subject: " + "; ".join(f"{k}: {v}" for k, v in mem.items())
    floor_key = _subjects("bench:floor:{s")

    def floor() -> Any:
        return raw.evalsha(sha, 1, floor_key() + "}")

    araw: dict[int, Any] = {}

    async def afloor() -> Any:  # one raw client per event loop (each case runs its own)
        loop = id(asyncio.get_running_loop())
        if loop not in araw:
            araw[loop] = redis.asyncio.Redis.from_url(url)
        return await araw[loop].evalsha(sha, 1, floor_key() + "}")

    builders: dict[str, tuple[Any, Any, tuple[Any, ...], dict[str, Any]]] = {
        "sliding": (SlidingWindowLimiter, AsyncSlidingWindowLimiter, (100, 60), {}),
        "bucket": (TokenBucketLimiter, AsyncTokenBucketLimiter, (100, 100), {"per": 60}),
        "fixed": (FixedWindowLimiter, AsyncFixedWindowLimiter, (100, 60), {}),
        "counter": (SlidingCounterLimiter, AsyncSlidingCounterLimiter, (100, 60), {}),
        "multi": (MultiLimiter, AsyncMultiLimiter,
                  ([Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)],), {}),
    }  # fmt: skip
    labels = {
        "sliding": "SlidingWindowLimiter.hit",
        "bucket": "TokenBucketLimiter.hit (GCRA)",
        "fixed": "FixedWindowLimiter.hit",
        "counter": "SlidingCounterLimiter.hit",
        "multi": "MultiLimiter.hit (10/s + 1000/h)",
    }
    sync_lims = {k: b[0](*b[2], client=c, name="bench", **b[3]) for k, b in builders.items()}
    subj = {k: _subjects(f"{k}:", CASE_SUBJECTS.get(k, SUBJECTS)) for k in builders}
    out: list[BenchCase] = []

    cpu: list[tuple[BenchCase, Callable[[int], Any], str, int]] = []  # measured together below

    def add(name: str, call: Any, fl: Any, *, is_async: bool = False, extra: str = "", warm: int = 0) -> None:
        case = BenchCase("ratelimit", name, call, fl, is_async=is_async)
        cpu.append((case, (_async_runner if is_async else _sync_runner)(call), extra, warm))
        out.append(case)

    for k, lim in sync_lims.items():
        add(labels[k], _hits(lim, subj[k]), floor, extra=note if k == "sliding" else "",
            warm=CASE_SUBJECTS.get(k, 0))  # fmt: skip
    pk = _subjects("pk:")
    add("SlidingWindowLimiter.peek", lambda: sync_lims["sliding"].peek(pk()), floor)
    hot = SlidingWindowLimiter(5, 3600, client=c, name="hot")
    for _ in range(5):
        hot.hit("hot")
    add("hot subject, always denied", lambda: hot.hit("hot"), floor)
    hot_pols = [Policy.sliding(5, 3600), Policy.token_bucket(1000, per=3600)]
    hot_multi = MultiLimiter(hot_pols, client=c, name="hot")
    for _ in range(5):
        hot_multi.hit("hot")
    add("MultiLimiter hot subject, always denied", lambda: hot_multi.hit("hot"), floor)

    # asyncio: each case runs in its own event loop, so each builds its client on first use
    def async_call(k: str, prefix: str = "a") -> Callable[[], Awaitable[Any]]:
        made: dict[int, Any] = {}
        b = builders[k]
        s = _subjects(f"{prefix}{k}:", CASE_SUBJECTS.get(k, SUBJECTS))

        async def call() -> Any:
            loop = id(asyncio.get_running_loop())
            lim = made.get(loop)
            if lim is None:
                ac = connect_async(url)  # what users get; the floor is a plain redis.asyncio client
                lim = made[loop] = b[1](*b[2], client=ac, name="bench", **b[3])
            return await lim.hit(s())

        return call

    for k in builders:
        add("Async" + labels[k], async_call(k), afloor, is_async=True, warm=CASE_SUBJECTS.get(k, 0))

    # the same scripts sent by hand: what is left is our Python (flow, keys, decision) and the
    # pool. Both sides start on fresh subjects and fill them at the same pace: a sliding log's
    # server time grows with its entries (a small set is walked entry by entry) and a full one
    # denies, so subjects the cases above filled would weigh on one side only
    for k in ("sliding", "bucket", "fixed", "counter", "multi"):
        n = CASE_SUBJECTS.get(k, SUBJECTS)
        hand = _by_hand(raw, sync_lims[k], _subjects(f"h{k}:", n))
        out.append(BenchCase("ratelimit", f"{k} hit vs its EVALSHA by hand",
                             _hits(sync_lims[k], _subjects(f"v{k}:", n)), hand,
                             note="floor: the same script and ARGV sent with redis-py"))  # fmt: skip
    for k in ("sliding", "bucket"):  # our Python alone: the limiter on a plain redis.Redis too
        b = builders[k]
        plain_lim = b[0](*b[2], client=raw, name="bench", **b[3])
        mine, hand = _hits(plain_lim, _subjects(f"q{k}:")), _by_hand(raw, plain_lim, _subjects(f"p{k}:"))
        out.append(BenchCase("ratelimit", f"{k} hit on a plain client vs by hand", mine, hand,
                             note="both on one plain redis.Redis: no connect() pool"))  # fmt: skip
    for k in ("sliding", "bucket"):  # asyncio: ours on connect_async(), the floor on plain redis.asyncio
        out.append(BenchCase("ratelimit", f"async {k} hit vs its EVALSHA by hand", async_call(k, "va"),
                             _async_by_hand(url, raw, sync_lims[k], _subjects(f"ah{k}:")), is_async=True,
                             note="floor: the same script and ARGV sent with redis.asyncio"))  # fmt: skip

    _sliding_log_scaling(raw, c, floor, add)
    _peers(url, raw, floor, add)
    add("trivial EVALSHA (the floor itself)", floor, floor)
    # server CPU per check: every case in turn, CPU_ROUNDS times, the least of each (a shared
    # machine only ever adds time), so a burst of load elsewhere does not land on one case
    best: dict[int, float] = {}
    for _ in range(CPU_ROUNDS):
        for i, (_case, run, _extra, warm) in enumerate(cpu):
            usec = _server_usec(raw, run, warm)
            if usec is not None:
                best[i] = min(best.get(i, usec), usec)
    for i, (case, _run, extra, _warm) in enumerate(cpu):
        case.note = "; ".join(x for x in (_cpu_note(best.get(i)), extra) if x)
    return out


def _sliding_log_scaling(
    raw: redis.Redis, c: Any, floor: Callable[[], Any], add: Callable[..., None]
) -> None:
    """The sliding log holding ~L entries per subject: admitted and denied checks, memory."""
    for limit in LOG_LIMITS:
        n_subj = max(2, min(SUBJECTS, 200_000 // limit))
        room = 8000 * (CPU_ROUNDS + 2) // n_subj + 10  # admitted checks never run out of room
        roomy = SlidingWindowLimiter(limit + room, 3600, client=c, name=f"log{limit}r")
        full = SlidingWindowLimiter(limit, 3600, client=c, name=f"log{limit}f")
        for i in range(n_subj):
            roomy.reset(f"s{i}")
            roomy.hit(f"s{i}", limit)
        for i in range(min(n_subj, 50)):
            full.reset(f"s{i}")
            full.hit(f"s{i}", limit)
        size = _memory(raw, full.keys("s0"))
        mem = f"log of {limit} entries: {size} B per subject ({size / limit:.0f} B/entry)"
        add(f"sliding log, limit {limit}: admitted", _hits(roomy, _subjects("s", n_subj)), floor, extra=mem)
        add(
            f"sliding log, limit {limit}: denied",
            _hits(full, _subjects("s", min(n_subj, 50))),
            floor,
            extra=mem,
        )


def _peers(url: str, raw: redis.Redis, floor: Callable[[], Any], add: Callable[..., None]) -> None:
    # the naive limiter: insert first, count after, in one MULTI (charges denials, ms members)
    naive_key = _subjects("naive:{s")

    def naive() -> bool:
        k = naive_key() + "}"
        now = time.time()
        pipe = raw.pipeline(transaction=True)
        pipe.zremrangebyscore(k, 0, now - 60)
        pipe.zadd(k, {f"{now}-{uuid.uuid4().hex[:8]}": now})
        pipe.zcard(k)
        pipe.expire(k, 60)
        return bool(pipe.execute()[2] <= 100)

    add("peer naive 4-command MULTI pipeline", naive, floor)
    try:
        from limits import parse, storage, strategies
    except ImportError:  # pragma: no cover - optional peer
        pass
    else:
        store = storage.RedisStorage(url)
        item = parse("100/minute")
        for label, cls in (
            ("moving window", strategies.MovingWindowRateLimiter),
            ("fixed window", strategies.FixedWindowRateLimiter),
            ("sliding counter", strategies.SlidingWindowCounterRateLimiter),
        ):
            strategy = cls(store)
            lk = _subjects(f"limits:{label}:")
            add(f"peer limits {label}", lambda s=strategy, k=lk: s.hit(item, k()), floor)
    try:
        from walrus import Database
    except ImportError:  # pragma: no cover - optional peer
        return
    db = Database.from_url(url)
    wl = db.rate_limit_lua("walrus", limit=100, per=60)
    wk = _subjects("w:")
    add("peer walrus rate_limit_lua", lambda: wl.limit(wk()), floor)


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
