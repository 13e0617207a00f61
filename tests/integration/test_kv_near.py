"""``KV(near=...)``: local reads with no I/O, kept coherent by the server's invalidations
(standalone and Cluster, both flavours; fakeredis sends no invalidations)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from loadtests.harness import count_round_trips
from redispatterns import Mount
from redispatterns.kv import KV, AsyncKV
from redispatterns.testing.plugin import Harness
from tests.integration import near_checker

PREFIX = "nearkv:"


@pytest.fixture(autouse=True)
def _real_servers(request: pytest.FixtureRequest) -> None:
    if "rp" in request.fixturenames and request.getfixturevalue("rp").backend.is_fake:
        pytest.skip("fakeredis sends no invalidation messages")


def make(rp: Harness, mounts: dict[str, Mount] | None = None, **kw: Any) -> Any:
    cls = rp.pick(KV, AsyncKV)
    kw.setdefault("near", True)
    return cls(rp.client, mounts or {"m": Mount(prefix=PREFIX)}, **kw)


def other(rp: Harness, mounts: dict[str, Mount] | None = None) -> KV:
    """The same mounts seen by "another process": its own client, no near tier."""
    return KV(rp.backend.sync_client(), mounts or {"m": Mount(prefix=PREFIX)})


def local(rp: Harness, kv: Any, key: str, *, within: float = 10.0, mount: str = "m") -> Any:
    """Read until a read does no I/O (the links are up and the value was kept); its value."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with count_round_trips() as n:
            value = rp.call(kv.get(mount, key))
        if n.n == 0:
            return value
        time.sleep(0.01)
    raise AssertionError("no local read: the invalidation links never came up")


def eventually(rp: Harness, kv: Any, key: str, want: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if rp.call(kv.get("m", key)) == want:
            return
        time.sleep(0.001)
    raise AssertionError(f"{key} still not {want!r} after {within} s: an invalidation was missed")


def test_a_repeated_get_is_local_and_writes_elsewhere_drop_it(rp: Harness) -> None:
    kv, w = make(rp), other(rp)
    w.set("m", "a", {"v": 1})
    assert local(rp, kv, "a") == {"v": 1}
    with count_round_trips() as n:
        assert rp.call(kv.has("m", "a")) is True and rp.call(kv.get_or("m", "a", 0)) == {"v": 1}
    assert n.n == 0
    stats = kv.near_stats
    assert stats.hits >= 1 and stats.entries == 1
    mine = local(rp, kv, "a")
    mine["v"] = "mutated"  # each hit decodes its own copy
    assert local(rp, kv, "a") == {"v": 1}
    w.set("m", "a", {"v": 2})  # a write elsewhere
    eventually(rp, kv, "a", {"v": 2})
    w.merge("m", "a", {"w": 3})  # a merge elsewhere
    eventually(rp, kv, "a", {"v": 2, "w": 3})
    w.delete("m", "a")  # a delete elsewhere
    eventually(rp, kv, "a", None)
    assert local(rp, kv, "a") is None  # absence is kept locally too
    assert rp.call(kv.get_or("m", "a", 7)) == 7
    assert rp.call(kv.has("m", "a")) is False
    w.set("m", "a", 4)  # and dropped by the next write
    eventually(rp, kv, "a", 4)
    w.clear("m")  # a clear elsewhere
    eventually(rp, kv, "a", None)
    deadline = time.monotonic() + 5  # a read may see a write before the link's thread counts it
    while stats.invalidations < 5:
        assert time.monotonic() < deadline, stats
        time.sleep(0.01)


def test_this_object_reads_its_own_writes_at_once(rp: Harness) -> None:
    kv = make(rp)
    rp.call(kv.set("m", "a", 1))
    assert local(rp, kv, "a") == 1
    for i in range(2, 30):  # no waiting for the server's invalidation
        rp.call(kv.set("m", "a", i))
        assert rp.call(kv.get("m", "a")) == i
    rp.call(kv.merge("m", "d", {"x": 1}))
    local(rp, kv, "d")
    rp.call(kv.merge("m", "d", {"y": 2}))
    assert rp.call(kv.get("m", "d")) == {"x": 1, "y": 2}
    rp.call(kv.delete("m", "a"))
    assert rp.call(kv.get("m", "a")) is None
    rp.call(kv.set("m", "b", 1))
    local(rp, kv, "b")
    rp.call(kv.clear("m"))
    assert rp.call(kv.get("m", "b")) is None


def test_buffered_writes_are_read_back_and_dropped_when_sent(rp: Harness) -> None:
    kv = make(rp, write_policy="dispose")
    w = other(rp)
    w.set("m", "a", 1)
    assert local(rp, kv, "a") == 1
    rp.call(kv.set("m", "a", 2))  # buffered: read from the buffer, not the tier
    assert rp.call(kv.get("m", "a")) == 2
    assert rp.call(kv.flush()) == 1
    assert rp.call(kv.get("m", "a")) == 2  # the sent write dropped the local copy
    assert w.get("m", "a") == 2


def test_a_local_copy_never_outlives_the_records_ttl(rp: Harness) -> None:
    kv = make(rp)
    w = other(rp)
    for _ in range(5):  # a loaded machine may take longer than the TTL to bring the links up
        w.set("m", "t", "short", ttl=1.0)
        t0 = time.monotonic()  # the record expires before t0 + 1 s (it was set before t0)
        if local(rp, kv, "t") == "short" and time.monotonic() - t0 < 0.9:
            break
    else:
        raise AssertionError("never read locally within the record's TTL")
    time.sleep(max(0.0, t0 + 1.02 - time.monotonic()))
    # past the record's deadline: a read goes to Redis (the local deadline, or the expiry's
    # invalidation if the server already deleted it) and finds nothing
    with count_round_trips() as n:
        assert rp.call(kv.get("m", "t")) is None
    assert n.n >= 1


def test_a_killed_link_flushes_the_tier_and_misses_nothing(rp: Harness) -> None:
    kv, w = make(rp), other(rp)
    w.set("m", "a", 1)
    local(rp, kv, "a")
    stats = kv.near_stats
    flushes = stats.flushes
    c = rp.backend.sync_client()
    kw = {"target_nodes": "all"} if rp.backend.is_cluster else {}
    c.client_kill_filter(_type="pubsub", **kw)
    w.set("m", "a", 2)  # written while the link may be down
    eventually(rp, kv, "a", 2)
    deadline = time.monotonic() + 5
    while stats.flushes == flushes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats.flushes > flushes
    assert local(rp, kv, "a") == 2  # the link came back


def test_a_read_overtaken_by_a_write_is_not_kept(rp: Harness) -> None:
    # many rounds of: reader reads while another client writes; the last read after the
    # write's invalidation must never be stuck on a value older than the last write
    kv, w = make(rp), other(rp)
    w.set("m", "r", 0)
    local(rp, kv, "r")
    flushes = kv.near_stats.flushes
    for i in range(1, 200):
        w.set("m", "r", i)
        rp.call(kv.get("m", "r"))  # may race the invalidation
        eventually(rp, kv, "r", i, within=2.0)
    # every write's invalidation is applied, unless a link gap (a loaded machine) flushed the
    # whole tier instead, which is counted; a read may see the new value from Redis before the
    # reader thread has applied the last invalidations (one pending sends the read to Redis), so
    # the count is waited for, not sampled
    stats = kv.near_stats
    deadline = time.monotonic() + 5
    while stats.invalidations < 199 and stats.flushes == flushes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats.invalidations >= 199 or stats.flushes > flushes, stats


def test_mounts_are_tracked_together_and_schema_defaults_are_served(rp: Harness) -> None:
    mounts = {
        "m": Mount(prefix=PREFIX),
        "p": Mount(prefix="nearkvp:", schema={"theme": {"type": "string", "default": "light"}}),
    }
    kv, w = make(rp, mounts), other(rp, mounts)
    assert local(rp, kv, "theme", mount="p") == "light"
    w.set("p", "theme", "dark")
    deadline = time.monotonic() + 5
    while rp.call(kv.get("p", "theme")) != "dark":
        assert time.monotonic() < deadline, "the second mount's write was never heard"
        time.sleep(0.001)
    w.set("m", "x", 1)
    assert local(rp, kv, "x") == 1


def test_near_is_checked() -> None:
    with pytest.raises(TypeError, match="near="):
        KV("redis://localhost:1/0", {"m": Mount(prefix=PREFIX)}, near=0)
    with pytest.raises(TypeError, match="near="):
        KV("redis://localhost:1/0", {"m": Mount(prefix=PREFIX)}, near="yes")  # type: ignore[arg-type]
    assert KV("redis://localhost:1/0", {"m": Mount(prefix=PREFIX)}).near_stats is None


def test_a_client_that_sends_no_invalidations_reads_plainly(caplog: pytest.LogCaptureFixture) -> None:
    import fakeredis

    kv = KV(fakeredis.FakeRedis(), {"m": Mount(prefix=PREFIX)}, near=True)
    kv.set("m", "a", 1)
    assert kv.get("m", "a") == 1 and kv.get("m", "a") == 1
    assert kv.get_or("m", "b", 2) == 2
    assert kv.near_stats is not None and kv.near_stats.hits == 0
    assert "near= needs a server that sends invalidations" in caplog.text


def test_coherence_checker_no_read_older_than_the_last_acknowledged_write(rp: Harness) -> None:
    # see tests/integration/near_checker.py (the writer process writes with a plain KV)
    kv = make(rp, {"m": Mount(prefix="nearcheck:", ttl=60)})
    other(rp, {"m": Mount(prefix="nearcheck:", ttl=60)}).set("m", "c", 0)
    local(rp, kv, "c")
    out = near_checker.check(rp, lambda: kv.get("m", "c"), "kv")
    print(f"near coherence ({rp.backend}, {rp.flavour}): {out}")
    assert kv.near_stats.hits > 0 and kv.near_stats.invalidations > 0
