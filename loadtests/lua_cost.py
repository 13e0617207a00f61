"""``make bench-lua``: what each pattern's scripts cost the server in CPU instructions (callgrind).

The server runs under ``valgrind --tool=callgrind``, counting only inside ``EVALSHA``, with every
script in ``lua/`` loaded: a busy server's Lua heap (a script with no logic cost 8% more with them
loaded than alone, the garbage collector's steps walking the larger heap). Each case makes its
calls on a plain redis-py client, and the instructions they cost the server are divided by the
calls. Unlike the microseconds of ``make bench``, the count repeats from run to run whatever else
the machine does (within 1% for most cases, up to 9% where a path depends on the clock), so a
change to a script shows as a number, not a spread. The limiters come first, then one call of each
other pattern whose hot path is a script (a lock's acquire and release, a session read and update,
a kv write, a leaderboard submit, a cache fill's store); a call that runs two scripts counts both.

Beside the sliding log and the two-policy limiter, their **commands alone**: the same server
commands on the same key shapes in a script with no logic (what any script doing the job must
spend); the gap is the limiter's own Lua. Needs ``valgrind`` and a ``redis-server`` or
``valkey-server``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from loadtests.bench_ratelimit import _subjects
from redispatterns.cache import cached
from redispatterns.kv import KV
from redispatterns.leaderboard import Leaderboard
from redispatterns.lock import Lock
from redispatterns.mount import Mount
from redispatterns.ratelimit import (
    FixedWindowLimiter,
    MultiLimiter,
    Policy,
    SlidingCounterLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
)
from redispatterns.session import SessionStore
from redispatterns.testing import find_server_kinds, free_port

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
CALLS = 2000
# the commands a sliding-log hit needs (a log above 16 holding live entries), and a multi hit of
# a 10/s log and a token bucket, with no logic around them: ZADD and INCRBY as the limiters send
# them, the first hit's expiry as the limiters set it
BARE_LOG = """local t = redis.call('TIME')
local m = t[1] .. string.sub('00000' .. t[2], -6)
local live = redis.call('ZCARD', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', m - ARGV[2]))
redis.call('ZADD', KEYS[1], m, m)
if live == 0 then redis.call('PEXPIRE', KEYS[1], '120000') end
return ARGV[1] - live - 1"""
BARE_MULTI = """local t = redis.call('TIME')
local m = t[1] .. string.sub('00000' .. t[2], -6)
local live = redis.call('ZCOUNT', KEYS[1], string.format('(%d', m - ARGV[2]), '+inf')
local tat = redis.call('INCRBY', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], m, m)
redis.call('PEXPIRE', KEYS[1], '1000')
return {ARGV[1] - live - 1, tat - m}"""


class Callgrind:
    """A server under callgrind: :meth:`count` runs calls and returns the instructions they cost."""

    def __init__(self, server: str, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / "cg.out"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", "--collect-atstart=no",
             "--toggle-collect=evalShaCommand", server, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if self.client.ping():
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start under valgrind")
            time.sleep(0.2)
        self.dumps = 0

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True, capture_output=True)

    def count(self, run: Callable[[], Any], calls: int) -> float:
        """Instructions per call inside EVALSHA while ``run`` makes ``calls`` calls."""
        self._control("-z")
        run()
        self._control("-d")
        self.dumps += 1
        dump = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 30
        while True:
            if dump.exists():
                for line in dump.read_text().splitlines():
                    if line.startswith(("totals:", "summary:")):
                        return int(line.split()[1]) / calls
            if time.monotonic() > deadline:
                raise RuntimeError(f"callgrind wrote no totals to {dump}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _repeat(calls: int, fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            fn()

    return run


def _limiter_case(lim: Any, subjects: int, calls: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(warm, run): two hits per subject first (a log holds entries), then ``calls`` hits."""
    subject = _subjects("s", subjects)

    def hit() -> None:
        lim.hit(subject())

    return _repeat(2 * subjects, hit), _repeat(calls, hit)


def _bare_case(
    c: redis.Redis,
    source: str,
    keys: Callable[[str], list[str]],
    args: list[bytes],
    subjects: int,
    calls: int,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(warm, run) for a script sent by hand, on the same key shapes and pace as a limiter case."""
    sha = c.script_load(source)
    subject = _subjects("b", subjects)

    def call() -> None:
        ks = keys(subject())
        c.evalsha(sha, len(ks), *ks, *args)

    return _repeat(2 * subjects, call), _repeat(calls, call)


def cases(
    c: redis.Redis, calls: int, subjects: int = 1000
) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(label, warm, run) per case, the floor first."""
    trivial = c.script_load("return 1")
    floor_key = _subjects("floor:{", 1000)

    def floor() -> None:
        c.evalsha(trivial, 1, floor_key() + "}")

    yield "trivial EVALSHA (the floor)", (lambda: None), _repeat(calls, floor)
    log = SlidingWindowLimiter(100, 60, client=c, name="cost")
    yield ("SlidingWindowLimiter.hit (100/60s)", *_limiter_case(log, subjects, calls))
    yield (
        "  its commands alone (TIME ZCARD ZREMRANGEBYSCORE ZADD)",
        *_bare_case(c, BARE_LOG, lambda s: ["bl:{" + s + "}"], [b"100", b"60000000"], subjects, calls),
    )
    # an hour: the bucket stays drawn and the windows stay the same through a run, so every
    # call takes one path (a window changing mid-run, or a bucket refilling, moves the count)
    made: list[tuple[str, Any]] = [
        ("TokenBucketLimiter.hit (1000/h)", TokenBucketLimiter(1000, 1000, per=3600, client=c, name="cost")),
        ("FixedWindowLimiter.hit (1000/h)", FixedWindowLimiter(1000, 3600, client=c, name="cost")),
        ("SlidingCounterLimiter.hit (1000/h)", SlidingCounterLimiter(1000, 3600, client=c, name="cost")),
    ]  # fmt: skip
    for label, lim in made:
        yield (label, *_limiter_case(lim, subjects, calls))
    multi = MultiLimiter([Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)], client=c, name="cost")
    yield ("MultiLimiter.hit (10/s + 1000/h)", *_limiter_case(multi, 2 * subjects, calls))
    yield (
        "  its commands alone (TIME ZCOUNT INCRBY ZADD PEXPIRE)",
        *_bare_case(c, BARE_MULTI, lambda s: ["bm:{" + s + "}a", "bm:{" + s + "}b"],
                    [b"10", b"1000000", b"1000", b"3600000"], 2 * subjects, calls),
    )  # fmt: skip


def pattern_cases(
    c: redis.Redis, calls: int, subjects: int = 1000
) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(label, warm, run): one hot call of each other pattern whose work is a script."""
    lock = Lock("cost:lock", 30, client=c)

    def use_lock() -> None:
        with lock:
            pass

    yield "with Lock(name): acquire + release (two scripts)", use_lock, _repeat(calls, use_lock)
    store = SessionStore(c, mount=Mount(prefix="cost:sess:"), ttl=1800)
    token = store.create("user:42", {"user": "user:42", "cart": [101, 202], "theme": "dark"})

    def get() -> None:
        store.get(token)

    yield "SessionStore.get (slides the TTL)", get, _repeat(calls, get)

    def update() -> None:
        store.update(token, {"theme": "light"})

    yield "SessionStore.update one field", update, _repeat(calls, update)
    kv = KV(c, {"user": Mount(prefix="cost:kv:", ttl=3600)}, write_policy="immediate")

    def kv_set() -> None:
        kv.set("user", "profile", {"name": "Ada", "n": 42})

    yield "KV.set (quotas, TTL)", kv_set, _repeat(calls, kv_set)
    board, member = Leaderboard("cost", client=c), _subjects("m", 5 * subjects)

    def submit() -> None:
        board.submit(member(), 7)

    yield "Leaderboard.submit best", _repeat(5 * subjects, submit), _repeat(calls, submit)
    fresh = itertools.count()

    @cached(ttl=60, client=c, name="cost.fill")
    def load(n: int) -> dict[str, int]:
        return {"n": n}

    def miss() -> None:
        load(next(fresh))

    # (a cold miss is a GET, a SET NX for the lease, then this script storing the value)
    yield "@cached cold miss: its store script (cache_fill)", miss, _repeat(calls, miss)


def counts(calls: int = CALLS, subjects: int = 1000) -> Iterator[tuple[str, float]]:
    """(case, instructions per call), case by case as each is measured; the floor first. Each
    case first warms its state on ``subjects`` subjects (a few calls each), then counts ``calls``."""
    kind = find_server_kinds()[0]
    with tempfile.TemporaryDirectory(prefix="rp-callgrind-") as tmp:
        cg = Callgrind(kind.server, Path(tmp))
        try:
            for path in sorted(LUA_DIR.glob("*.lua")):  # a busy server's Lua heap
                cg.client.script_load(path.read_text())
            every = itertools.chain(
                cases(cg.client, calls, subjects), pattern_cases(cg.client, calls, subjects)
            )
            for label, warm, run in every:
                warm()
                yield label, cg.count(run, calls)
        finally:
            cg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make bench-lua", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=CALLS, help="calls per case (default %(default)s)")
    parser.add_argument("--subjects", type=int, default=1000, help="subjects per case (default %(default)s)")
    args = parser.parse_args(argv)
    kinds = find_server_kinds()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control") or not kinds:
        print("bench-lua: needs valgrind (callgrind_control) and redis-server or valkey-server")
        return 2
    print(f"server: {kinds[0].name} {kinds[0].version} under callgrind; every lua/ script loaded")
    print(f"{'case':58} {'instructions/call':>17} {'x floor':>8}")
    floor: float | None = None
    for label, ir in counts(args.calls, args.subjects):
        floor = floor or ir
        print(f"{label:58} {ir:17,.0f} {ir / floor:8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
