"""Rate-limit checks vs the floor: a trivial one-key EVALSHA sent by hand with redis-py.

Each case spreads its calls over 1,000 subjects (as real traffic does), so the admitted path is
measured; one case measures a hot subject that is always denied. Peers, when installed:
``limits`` (moving window, fixed window, sliding-window counter) and the naive 4-command
pipeline limiter (ZREMRANGEBYSCORE, ZADD, ZCARD, EXPIRE in MULTI). Memory per subject comes
from ``MEMORY USAGE ... SAMPLES 0`` and is printed in the notes.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns.client import connect
from redispatterns.ratelimit import (
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


def _subjects(prefix: str) -> Callable[[], str]:
    it = itertools.cycle([f"{prefix}{i}" for i in range(SUBJECTS)])
    return lambda: next(it)


def _memory(client: Any, keys: tuple[str, ...]) -> int:
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)


def _memory_notes(url: str) -> dict[str, str]:
    """Bytes per subject after 100 admitted hits (sliding log: per entry too)."""
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


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    raw = redis.Redis.from_url(url)
    sha = raw.script_load(TRIVIAL)
    mem = _memory_notes(url)
    note = "memory per subject: " + "; ".join(f"{k}: {v}" for k, v in mem.items())
    floor_key = _subjects("bench:floor:{s")

    def floor() -> Any:
        return raw.evalsha(sha, 1, floor_key() + "}")

    sliding = SlidingWindowLimiter(100, 60, client=c, name="bench")
    bucket = TokenBucketLimiter(100, 100, per=60, client=c, name="bench")
    fixed = FixedWindowLimiter(100, 60, client=c, name="bench")
    counter = SlidingCounterLimiter(100, 60, client=c, name="bench")
    multi = MultiLimiter([Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)], client=c, name="bench")
    hot = SlidingWindowLimiter(5, 3600, client=c, name="hot")
    subj = {name: _subjects(f"{name}:") for name in ("sw", "tb", "fw", "sc", "mu", "pk")}

    araw: dict[int, Any] = {}

    async def afloor() -> Any:  # one raw client per event loop (each case runs its own)
        import asyncio

        loop = id(asyncio.get_running_loop())
        if loop not in araw:
            araw[loop] = redis.asyncio.Redis.from_url(url)
        return await araw[loop].evalsha(sha, 1, floor_key() + "}")

    alims: dict[str, Any] = {}

    def alimiter(name: str) -> Any:
        if name not in alims:
            ac = redis.asyncio.Redis.from_url(url)  # one per case: each case runs in its own loop
            alims[name] = (
                AsyncSlidingWindowLimiter(100, 60, client=ac, name="bench")
                if name == "sw"
                else AsyncTokenBucketLimiter(100, 100, per=60, client=ac, name="bench")
            )
        return alims[name]

    async def asliding() -> Any:
        return await alimiter("sw").hit(subj["sw"]())

    async def abucket() -> Any:
        return await alimiter("tb").hit(subj["tb"]())

    out = [
        BenchCase("ratelimit", "SlidingWindowLimiter.hit", lambda: sliding.hit(subj["sw"]()), floor,
                  note=note),
        BenchCase("ratelimit", "TokenBucketLimiter.hit (GCRA)", lambda: bucket.hit(subj["tb"]()), floor),
        BenchCase("ratelimit", "FixedWindowLimiter.hit", lambda: fixed.hit(subj["fw"]()), floor),
        BenchCase("ratelimit", "SlidingCounterLimiter.hit", lambda: counter.hit(subj["sc"]()), floor),
        BenchCase("ratelimit", "MultiLimiter.hit (10/s + 1000/h)", lambda: multi.hit(subj["mu"]()), floor),
        BenchCase("ratelimit", "SlidingWindowLimiter.peek", lambda: sliding.peek(subj["pk"]()), floor),
        BenchCase("ratelimit", "hot subject, always denied", lambda: hot.hit("hot"), floor),
        BenchCase("ratelimit", "AsyncSlidingWindowLimiter.hit", asliding, afloor, is_async=True),
        BenchCase("ratelimit", "AsyncTokenBucketLimiter.hit", abucket, afloor, is_async=True),
    ]  # fmt: skip
    for _ in range(5):
        hot.hit("hot")

    # the same script sent by hand: what is left is our Python (flow, keys, decision) and the pool
    from redispatterns._core.scripts import load

    hit_sha = raw.script_load(load("ratelimit_hit").source)
    by_hand_keys = {"sliding": _subjects("byhand:sw:{"), "bucket": _subjects("byhand:tb:{")}
    sliding_args = (1, 1, "0123456789ab", "", 1, 100, 60_000_000)
    bucket_args = (1, 1, "", "", 2, 100, 600_000)

    def by_hand(kind: str, args: tuple[Any, ...]) -> Callable[[], Any]:
        keys = by_hand_keys[kind]
        return lambda: raw.evalsha(hit_sha, 1, keys() + "}", *args)

    out += [
        BenchCase("ratelimit", "sliding hit vs its EVALSHA by hand", lambda: sliding.hit(subj["sw"]()),
                  by_hand("sliding", sliding_args), note="floor: same script, same ARGV"),
        BenchCase("ratelimit", "bucket hit vs its EVALSHA by hand", lambda: bucket.hit(subj["tb"]()),
                  by_hand("bucket", bucket_args)),
        BenchCase("ratelimit", "ratelimit_hit by hand vs trivial EVALSHA", by_hand("sliding", sliding_args),
                  floor, note="the Lua's own cost on the server"),
    ]  # fmt: skip

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

    out.append(BenchCase("ratelimit", "peer: naive 4-command MULTI pipeline", naive, floor))
    try:
        from limits import parse, storage, strategies
    except ImportError:  # pragma: no cover - optional peer
        return out
    store = storage.RedisStorage(url)
    item = parse("100/minute")
    for label, cls in (
        ("moving window", strategies.MovingWindowRateLimiter),
        ("fixed window", strategies.FixedWindowRateLimiter),
        ("sliding counter", strategies.SlidingWindowCounterRateLimiter),
    ):
        strategy = cls(store)
        lk = _subjects(f"limits:{label}:")
        out.append(
            BenchCase("ratelimit", f"peer: limits {label}", lambda s=strategy, k=lk: s.hit(item, k()), floor)  # type: ignore[misc]
        )
    return out


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
