"""``@cached(near=...)``: local hits with no I/O, kept coherent by the server's invalidations
(standalone and Cluster, both flavours; fakeredis sends no invalidations)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from loadtests.harness import count_round_trips
from redispatterns.cache import cached
from redispatterns.testing.plugin import Harness
from tests.integration.test_cache import counter, make


@pytest.fixture(autouse=True)
def _real_servers(rp: Harness) -> None:
    if rp.backend.is_fake:
        pytest.skip("fakeredis sends no invalidation messages")


def _local_hit(rp: Harness, f: Any, *args: Any, within: float = 10.0) -> Any:
    """Call until a call does no I/O (the link is up and the value was kept); its value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with count_round_trips() as n:
            value = rp.call(f(*args))
        if n.n == 0:
            return value
        time.sleep(0.01)
    raise AssertionError("no local hit: the invalidation link never came up")


def _eventually(rp: Harness, f: Any, want: Any, within: float = 5.0) -> float:
    """Seconds until ``f(1)`` returns ``want``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if rp.call(f(1)) == want:
            return time.monotonic() - t0
        time.sleep(0.001)
    raise AssertionError(f"still not {want!r} after {within} s: an invalidation was missed")


def _writer(rp: Harness, name: str) -> Any:
    """The same cached function in "another process": its own client, no near tier."""
    other = rp.backend.sync_client()

    def body(x: Any, y: Any = None) -> Any:
        return None

    return cached(ttl=60, client=other, name=name)(body)


def test_a_repeated_read_is_local_and_a_write_elsewhere_drops_it(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, near=True, name="near.a")
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert _local_hit(rp, f, 1) == {"x": 1, "n": 1}
    assert f.stats.near is not None and f.stats.near.hits >= 1 and f.stats.near.entries == 1
    mine = _local_hit(rp, f, 1)
    mine["x"] = "mutated"  # each hit decodes its own copy
    assert _local_hit(rp, f, 1) == {"x": 1, "n": 1}
    w = _writer(rp, "near.a")
    assert w.set({"x": 1, "n": 99}, 1) == "ok"
    _eventually(rp, f, {"x": 1, "n": 99})
    w.invalidate(1)  # a delete elsewhere: the next read computes
    _eventually(rp, f, {"x": 1, "n": 2})
    assert calls == [1, 1]


def test_a_killed_link_flushes_the_tier_and_misses_nothing(rp: Harness) -> None:
    _, body = counter()
    f = make(rp, body, near=True, name="near.b")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    near = f.stats.near
    flushes = near.flushes
    c = rp.backend.sync_client()
    if rp.backend.is_cluster:
        c.client_kill_filter(_type="pubsub", target_nodes="all")
    else:
        c.client_kill_filter(_type="pubsub")
    w = _writer(rp, "near.b")
    w.set({"x": 1, "n": 42}, 1)  # written while the link is down
    _eventually(rp, f, {"x": 1, "n": 42})
    deadline = time.monotonic() + 5
    while near.flushes == flushes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert near.flushes > flushes  # the gap emptied the tier
    assert _local_hit(rp, f, 1) == {"x": 1, "n": 42}  # and the link came back


def test_a_value_is_kept_only_until_its_soft_expiry(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, near=True, ttl=0.3, stale_ttl=30, jitter=0, early_refresh=0, name="near.c")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    time.sleep(0.35)  # past the soft TTL: the local entry is gone, Redis serves (and refreshes)
    with count_round_trips() as n:
        rp.call(f(1))
    assert n.n >= 1
    assert len(calls) >= 1


def test_invalidate_drops_the_local_entry_at_once(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, near=True, name="near.d")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    rp.call(f.invalidate(1))
    assert rp.call(f(1)) == {"x": 1, "n": 2}  # no window: the local entry went first
    assert calls == [1, 1]


def _coherent(x: Any, y: Any = None) -> Any:
    return 0


def _writer_main(url: str, n: int, out: Any) -> None:
    """Another process: writes 1..n under the reader's key, reporting when each was acknowledged."""
    import redispatterns as rpm

    rpm.configure(url)
    w = cached(ttl=60, name="near.coherence")(_coherent)
    for i in range(1, n + 1):
        w.set(i, 1)
        out.put((i, time.monotonic()))  # CLOCK_MONOTONIC: one clock for every process
        time.sleep(0.003)
    out.put(None)


def test_coherence_checker_no_read_older_than_the_last_acknowledged_write(rp: Harness) -> None:
    # readers here with a near tier, a writer in another process, the invalidation link killed
    # halfway: reads never go back in time, and no read returns a value older than the last
    # write acknowledged before it began, give or take the invalidation delay. That delay is a
    # few ms at p99 on a quiet machine (loadtests.bench_cache --profile) but a starved thread on
    # a busy one can take far longer: the bound here (1 s) is what a missed invalidation (stale
    # until the 60 s TTL) could never meet
    import multiprocessing

    assert rp.backend.url is not None
    f = make(rp, lambda x, y: 0, near=True, name="near.coherence")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    writer = ctx.Process(target=_writer_main, args=(rp.backend.url, 400, out))
    writer.start()
    writes: list[tuple[int, float]] = []
    reads: list[tuple[float, int]] = []
    killed = False
    done = False
    deadline = time.monotonic() + 120
    while not done and time.monotonic() < deadline:
        while True:
            try:
                item = out.get_nowait()
            except Exception:
                break
            if item is None:
                done = True
                break
            writes.append(item)
        if not killed and len(writes) >= 200:
            c = rp.backend.sync_client()
            kw = {"target_nodes": "all"} if rp.backend.is_cluster else {}
            c.client_kill_filter(_type="pubsub", **kw)
            killed = True
        began = time.monotonic()
        reads.append((began, rp.call(f(1))))
    writer.join(timeout=30)
    assert writer.exitcode == 0 and done and killed
    bound = 1.0
    stale = []
    last = 0
    for began, value in reads:
        assert value >= last, f"a read went back in time: {value} after {last}"
        last = value
        floor = max((i for i, acked in writes if acked < began - bound), default=0)
        if value < floor:
            stale.append((began, value, floor))
    assert not stale, f"{len(stale)} stale reads, first: {stale[0]}"
    assert len(reads) > 400 and f.stats.near.hits > 0 and f.stats.near.invalidations > 0
    assert rp.call(f(1)) == 400
