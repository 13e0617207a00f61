"""``@cached(near=...)``: local hits with no I/O, kept coherent by the server's invalidations
(standalone and Cluster, both flavours; fakeredis sends no invalidations)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from loadtests.harness import count_round_trips
from redispatterns.cache import cached
from redispatterns.testing.plugin import Harness
from tests.integration import near_checker
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
    f = make(rp, body, near=True, ttl=1.0, stale_ttl=30, jitter=0, early_refresh=0, name="near.c")
    rp.call(f(1))
    # the soft expiry is stamped when the value is stored, before the first call returns: timed
    # from before the call, a slow first call (a cluster client's start) left it still fresh
    filled = time.monotonic()
    assert _local_hit(rp, f, 1) == {"x": 1, "n": 1}
    time.sleep(max(0.0, filled + 1.05 - time.monotonic()))  # past the soft TTL: the local entry is gone
    with count_round_trips() as n:
        served = rp.call(f(1))
    assert n.n >= 1  # Redis serves it (stale while it refreshes, or refreshed)
    assert served in ({"x": 1, "n": 1}, {"x": 1, "n": 2})
    _eventually(rp, f, {"x": 1, "n": 2})  # the refresh landed
    assert calls == [1, 1]


def test_invalidate_drops_the_local_entry_at_once(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, near=True, name="near.d")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    rp.call(f.invalidate(1))
    assert rp.call(f(1)) == {"x": 1, "n": 2}  # no window: the local entry went first
    assert calls == [1, 1]


def test_coherence_checker_no_read_older_than_the_last_acknowledged_write(rp: Harness) -> None:
    # see tests/integration/near_checker.py: a writer process, this reader, a bound calibrated
    # from the measured invalidation delay, the links killed halfway
    f = make(rp, lambda x, y: 0, near=True, name="near.coherence")
    rp.call(f(1))
    _local_hit(rp, f, 1)
    out = near_checker.check(rp, lambda: f(1), "cache")
    print(f"near coherence ({rp.backend}, {rp.flavour}): {out}")
    assert f.stats.near.hits > 0 and f.stats.near.invalidations > 0
