"""The coherence checker of the near tiers (issue 18): a writer in another process, a reader with
a near tier in this one, and a check of every read against the writes acknowledged before it.

1. *Calibration*: the writer writes ``CALIBRATION`` values 3 ms apart while the reader reads in a
   tight loop (a busy reader: the link's thread waits for the GIL, which the loop hands over
   every 5 ms). Each read's *lag* is how long before it began the first write newer than its
   value was acknowledged (0 for a fresh read). The bound is ``MARGIN`` times the p99 of those
   lags, and never below ``FLOOR``. Measured on a loaded 2-core machine: every lag 0 over ~2.1
   million reads (standalone and Cluster, sync and async), because a local hit is served only
   when no invalidation is waiting on the links (``Tracking.quiet``) and the server writes a
   write's invalidation before its reply; before that check, a busy reader lagged up to 34 ms
   (p99 23 ms: the link's thread waiting for the GIL or the CPU).
2. *Check*: ``WRITES`` more values; after every eighth write the writer pauses 1.5 times the bound,
   so a missed invalidation leaves a read stale for longer than the bound and is caught (writes
   3 ms apart would hide it: the next write's invalidation heals it). Halfway, every
   invalidation link is killed.

Every read (both phases) must return a value no older than the last write acknowledged more
than the bound before the read began, and reads never go back in time.
"""

from __future__ import annotations

import bisect
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redispatterns.testing.plugin import Harness

CALIBRATION = 100
WRITES = 160
MARGIN = 5.0
FLOOR = 0.005  # s: 50 times the one window the design leaves (QUIET_WINDOW, 0.1 ms)


def _coherent(x: Any, y: Any = None) -> Any:
    return 0


def writer_main(url: str, kind: str, conn: Any) -> None:
    """Another process: writes 1, 2, ... under the reader's key, sending ``(i, acknowledged at)``
    after each (CLOCK_MONOTONIC: one clock for every process); the bound comes back after the
    calibration."""
    import redispatterns as rpm
    from redispatterns.cache import cached
    from redispatterns.kv import KV

    rpm.configure(url)
    if kind == "cache":
        f = cached(ttl=60, name="near.coherence")(_coherent)

        def write(i: int) -> None:
            f.set(i, 1)
    else:
        kv = KV(url, {"m": rpm.Mount(prefix="nearcheck:", ttl=60)})

        def write(i: int) -> None:
            kv.set("m", "c", i)

    for i in range(1, CALIBRATION + 1):
        write(i)
        conn.send((i, time.monotonic()))
        time.sleep(0.003)
    conn.send("calibrated")
    bound = conn.recv()
    for i in range(CALIBRATION + 1, CALIBRATION + WRITES + 1):
        write(i)
        conn.send((i, time.monotonic()))
        time.sleep(1.5 * bound if i % 8 == 0 else 0.003)
    conn.send(None)


@dataclass
class Outcome:
    bound: float
    lag_p99: float
    lag_max: float  # over every read, both phases
    reads: int
    long_pauses: int


def _lags(reads: list[tuple[float, int]], acked: dict[int, float]) -> list[float]:
    return sorted(max(0.0, b - acked[v + 1]) if (v + 1) in acked else 0.0 for b, v in reads)


def check(rp: Harness, read: Callable[[], Any], kind: str) -> Outcome:
    """Run the checker (``read()`` gives the value, or an awaitable of it; ``kind``: the writer's
    ``"cache"`` or ``"kv"``) and assert what the module docstring says."""
    assert rp.backend.url is not None
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    writer = ctx.Process(target=writer_main, args=(rp.backend.url, kind, theirs))
    writer.start()
    acked: dict[int, float] = {}
    reads: list[tuple[float, int]] = []
    bound = lag_p99 = 0.0
    killed = done = False
    deadline = time.monotonic() + 120
    while not done and time.monotonic() < deadline:
        while mine.poll():
            item = mine.recv()
            if item is None:
                done = True
            elif item == "calibrated":
                lags = _lags(reads, acked)
                lag_p99 = lags[int(0.99 * (len(lags) - 1))]
                bound = max(FLOOR, MARGIN * lag_p99)
                mine.send(bound)
            else:
                acked[item[0]] = item[1]
        if not killed and len(acked) >= CALIBRATION + WRITES // 2:
            c = rp.backend.sync_client()
            kw = {"target_nodes": "all"} if rp.backend.is_cluster else {}
            c.client_kill_filter(_type="pubsub", **kw)
            killed = True
        began = time.monotonic()
        reads.append((began, rp.call(read()) or 0))
    writer.join(timeout=30)
    assert writer.exitcode == 0 and done and killed and bound > 0
    stale = []
    last = 0
    writes = sorted(acked.items())
    times = [at for _, at in writes]
    for began, value in reads:
        assert value >= last, f"a read went back in time: {value} after {last}"
        last = value
        n = bisect.bisect_left(times, began - bound)  # writes acknowledged before began - bound
        floor = writes[n - 1][0] if n else 0
        if value < floor:
            stale.append((began, value, floor))
    assert not stale, f"{len(stale)} reads staler than {bound * 1000:.0f} ms, first: {stale[0]}"
    assert len(reads) > CALIBRATION + WRITES
    assert rp.call(read()) == CALIBRATION + WRITES
    return Outcome(bound, lag_p99, _lags(reads, acked)[-1], len(reads), WRITES // 8)
