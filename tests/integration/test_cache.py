"""@cached and @write_through on every backend and flavour: hits, misses, expiry, None,
stale-while-revalidate, XFetch, tags, write-through, codecs and mounts."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import pytest

import redispatterns as rpm
from redispatterns.cache import NOT_CACHED, cached, invalidate_tags, invalidate_tags_async, write_through
from redispatterns.testing.plugin import Harness


def make(rp_: Harness, body: Callable[..., Any], *, sleep: float = 0.0, **opts: Any) -> Any:
    """A cached function of the harness's flavour around ``body(*a, **kw)``."""
    opts.setdefault("ttl", 60)
    opts.setdefault("client", rp_.client)
    if rp_.is_async:
        import asyncio

        async def fn(x: Any, y: Any = None) -> Any:
            if sleep:
                await asyncio.sleep(sleep)
            return body(x, y)

        return cached(**opts)(fn)

    def sfn(x: Any, y: Any = None) -> Any:
        if sleep:
            time.sleep(sleep)
        return body(x, y)

    return cached(**opts)(sfn)


def counter() -> tuple[list[Any], Callable[..., Any]]:
    calls: list[Any] = []

    def body(x: Any, y: Any = None) -> Any:
        calls.append(x)
        return {"x": x, "n": len(calls)}

    return calls, body


def test_hit_miss_and_one_computation(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body)
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert rp.call(f(x=1, y=None)) == {"x": 1, "n": 1}  # defaults applied, keywords the same
    assert rp.call(f(2)) == {"x": 2, "n": 2}
    assert calls == [1, 2]
    assert f.stats.hits == 2 and f.stats.misses == 2
    assert rp.call(f.peek(1)) == {"x": 1, "n": 1}
    assert rp.call(f.peek(3)) is NOT_CACHED


def test_expiry_recomputes(rp: Harness) -> None:
    _, body = counter()
    f = make(rp, body, ttl=0.2, stale_ttl=0, jitter=0)
    rp.call(f(1))
    time.sleep(0.35)
    assert rp.call(f.peek(1)) is NOT_CACHED
    assert rp.call(f(1))["n"] == 2


def test_none_is_cached_and_told_from_a_miss(rp: Harness) -> None:
    calls: list[Any] = []

    def body(x: Any, y: Any) -> Any:
        calls.append(x)
        return None

    f = make(rp, body)
    assert rp.call(f(1)) is None
    assert rp.call(f(1)) is None
    assert calls == [1]
    assert rp.call(f.peek(1)) is None
    assert rp.call(f.peek(2)) is NOT_CACHED


def test_condition_and_ttl_callable_decide_storage(rp: Harness) -> None:
    calls: list[Any] = []

    def body(x: Any, y: Any) -> Any:
        calls.append(x)
        return x

    f = make(rp, body, condition=lambda r: r != "no")
    g = make(rp, body, ttl=lambda r: None if r == "skip" else 30, name="g")
    for fn, bad in ((f, "no"), (g, "skip")):
        rp.call(fn(bad))
        rp.call(fn(bad))
        rp.call(fn("ok"))
        rp.call(fn("ok"))
    assert calls == ["no", "no", "ok", "skip", "skip", "ok"]
    c = rp.backend.sync_client()
    assert 25_000 < c.pttl(g.key("ok")) <= 33_000  # callable TTL + the stale window


def test_a_hit_never_extends_the_ttl(rp: Harness) -> None:
    _, body = counter()
    f = make(rp, body, ttl=5, stale_ttl=0)
    rp.call(f(1))
    c = rp.backend.sync_client()
    before = c.pttl(f.key(1))
    time.sleep(0.25)
    rp.call(f(1))
    rp.call(f(1))
    after = c.pttl(f.key(1))
    assert 0 < after <= before - 200


def test_distinct_calls_never_share_a_key(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body)
    keys = {f.key("a b"), f.key("a", "b"), f.key(1), f.key("1"), f.key(1.0), f.key(True),
            f.key(None), f.key("None"), f.key(b"1"), f.key([1, 2]), f.key("[1, 2]")}  # fmt: skip
    assert len(keys) == 11
    for a in ("a b", 1, "1", True, None):
        rp.call(f(a))
    rp.call(f("a", "b"))
    assert len(calls) == 6


def _tags(rp: Harness, *tags: str, client: Any) -> Any:
    """invalidate_tags / invalidate_tags_async, as the flavour asks."""
    return (invalidate_tags_async if rp.is_async else invalidate_tags)(*tags, client=client)


def test_invalidate_tags_asyncio_keyword_still_works_with_a_deprecation_warning(rp: Harness) -> None:
    _, body = counter()
    f = make(rp, body, tags=["dep"], name="dep")
    rp.call(f(1))
    with pytest.warns(DeprecationWarning, match="invalidate_tags_async"):
        got = invalidate_tags("dep", client=rp.client, asyncio=rp.is_async)
    assert rp.call(got) == 1  # an awaitable for an asyncio client, as before; the count for a sync one
    assert rp.call(f.peek(1)) is NOT_CACHED


class A:
    @staticmethod
    @cached(ttl=60)
    def get(x: int) -> str:
        return "A"


class B:
    @staticmethod
    @cached(ttl=60)
    def get(x: int) -> str:
        return "B"


def test_same_name_in_two_classes_two_keys() -> None:
    a: Any = A.get
    b: Any = B.get
    assert a.key(1) != b.key(1)
    assert "A.get" in a.key(1) and "B.get" in b.key(1)


def test_stale_served_while_one_caller_refreshes(rp: Harness) -> None:
    calls, body = counter()
    # the refresh takes 0.8 s: on a busy machine every other caller still arrives while it runs
    f = make(rp, body, ttl=0.2, stale_ttl=30, jitter=0, early_refresh=0, sleep=0.8)
    first = rp.call(f(1))
    time.sleep(0.3)  # now stale, still present
    if rp.is_async:
        import asyncio

        async def many() -> list[Any]:
            return list(await asyncio.gather(*(f(1) for _ in range(10))))

        results = rp.call(many())
    else:
        results = []
        lock = threading.Lock()
        start = threading.Barrier(10)

        def call() -> None:
            start.wait()
            r = f(1)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(calls) == 2  # one refresh only
    assert results.count(first) == 9
    assert [r for r in results if r != first] == [{"x": 1, "n": 2}]
    assert f.stats.counts["stale"] == 9 and f.stats.counts["refreshed"] == 1
    # what the refresh stored (peek: a call could find it stale again, ttl being 0.2 s, on a
    # machine slow enough to let that pass since the refresher returned, and refresh it again)
    assert rp.call(f.peek(1)) == {"x": 1, "n": 2}


def test_stale_if_error(rp: Harness) -> None:
    state = {"fail": False}
    calls: list[Any] = []

    def body(x: Any, y: Any) -> Any:
        calls.append(x)
        if state["fail"]:
            raise RuntimeError("database down")
        return "v1"

    f = make(rp, body, ttl=0.1, stale_ttl=30, jitter=0, early_refresh=0)
    g = make(rp, body, ttl=0.1, stale_ttl=30, jitter=0, early_refresh=0, stale_if_error=False, name="g")
    assert rp.call(f(1)) == "v1" and rp.call(g(1)) == "v1"
    time.sleep(0.2)
    state["fail"] = True
    assert rp.call(f(1)) == "v1"
    assert f.stats.counts["stale_error"] == 1
    with pytest.raises(RuntimeError, match="database down"):
        rp.call(g(1))
    # the lease was released: the next caller tries again
    with pytest.raises(RuntimeError):
        rp.call(g(1))
    assert len(calls) == 5


def test_xfetch_refreshes_early_from_the_measured_compute_time(rp: Harness) -> None:
    calls, body = counter()
    # beta 3e8: a hit skips the early refresh only when -ln(U) < 30 s / (20 ms * beta), one draw in
    # 200 000 (at 1e6 it was one in 700: a flake about once in 350 runs of the two early calls)
    eager = make(rp, body, ttl=30, sleep=0.02, early_refresh=3e8, name="eager")
    calm = make(rp, body, ttl=30, sleep=0.02, early_refresh=0, name="calm")
    for fn in (eager, calm):
        for _ in range(3):
            rp.call(fn(1))
    # beta huge: every hit is "close to expiry" given a 20 ms compute; beta 0: never early
    assert calls == [1, 1, 1, 1]
    assert eager.stats.counts["refreshed"] == 2
    assert calm.stats.hits == 2


def test_invalidate_and_tags(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, tags=["user:{x}", "all"], name="f")
    g = make(rp, body, tags=["user:{x}"], name="g")
    for fn in (f, g):
        for x in range(1, 6):
            rp.call(fn(x))
    assert len(calls) == 10
    assert rp.call(f.invalidate(1)) == 1
    assert rp.call(f.peek(1)) is NOT_CACHED and rp.call(g.peek(1)) is not NOT_CACHED
    deleted = rp.call(_tags(rp, "user:2", client=rp.client))
    assert deleted == 2
    assert rp.call(f.peek(2)) is NOT_CACHED and rp.call(g.peek(2)) is NOT_CACHED
    assert rp.call(f.peek(3)) is not NOT_CACHED
    deleted = rp.call(_tags(rp, "all", client=rp.client))
    assert deleted == 3  # f(3), f(4), f(5) (f(1) was invalidated, f(2) by its tag)
    assert all(rp.call(f.peek(x)) is NOT_CACHED for x in range(1, 6))
    assert all(rp.call(g.peek(x)) is not NOT_CACHED for x in range(3, 6))
    assert rp.call(_tags(rp, "nobody", client=rp.client)) == 0


def test_tags_span_many_buckets_on_cluster(rp: Harness) -> None:
    _, body = counter()
    f = make(rp, body, tags=["t"], name="many")
    for x in range(60):
        rp.call(f(x))
    assert rp.call(_tags(rp, "t", client=rp.client)) == 60
    assert all(rp.call(f.peek(x)) is NOT_CACHED for x in range(60))


def test_refresh_and_set_handles(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body)
    rp.call(f(1))
    assert rp.call(f.refresh(1)) == {"x": 1, "n": 2}
    assert rp.call(f(1)) == {"x": 1, "n": 2}
    rp.call(f.set("manual", 1))
    assert rp.call(f(1)) == "manual"
    assert len(calls) == 2


def test_set_replaces_a_fresh_value_of_a_tagged_function(rp: Harness) -> None:
    """A put (``set``) of a tagged entry writes over a fresh value and records its tags, as an
    untagged one does (a put is never skipped as a fill would be)."""
    calls, body = counter()
    f = make(rp, body, tags=["t:{x}"], name="tagged-set")
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    rp.call(f.set("manual", 1))
    assert rp.call(f.peek(1)) == "manual" and rp.call(f(1)) == "manual"
    rp.call(f.set("again", 1))
    assert rp.call(f(1)) == "again" and len(calls) == 1
    assert rp.call(_tags(rp, "t:1", client=rp.client)) == 1
    assert rp.call(f.peek(1)) is NOT_CACHED


def _writer(rp_: Harness, body: Callable[..., Any], target: Any, **opts: Any) -> Any:
    if rp_.is_async:

        async def save(x: Any, value: Any) -> Any:
            return body(x, value)

        return write_through(target, **opts)(save)

    def ssave(x: Any, value: Any) -> Any:
        return body(x, value)

    return write_through(target, **opts)(ssave)


def test_write_through_updates_invalidates_and_leaves_failures_alone(rp: Harness) -> None:
    db: dict[Any, Any] = {1: "old"}

    def read(x: Any, y: Any) -> Any:
        return db[x]

    def write(x: Any, value: Any) -> Any:
        if value == "bad":
            raise ValueError("rejected")
        db[x] = value
        return {"stored": value}

    f = make(rp, read)
    save = _writer(rp, write, f, value=lambda r: r["stored"])
    drop = _writer(rp, write, f, mode="invalidate")
    assert rp.call(f(1)) == "old"
    assert rp.call(save(1, "new")) == {"stored": "new"}
    assert rp.call(f.peek(1)) == "new"
    with pytest.raises(ValueError, match="rejected"):
        rp.call(save(1, "bad"))
    assert rp.call(f.peek(1)) == "new"
    rp.call(drop(1, "newer"))
    assert rp.call(f.peek(1)) is NOT_CACHED
    assert rp.call(f(1)) == "newer"


def test_a_write_through_lost_to_an_outage_is_repaired_when_redis_is_back(rp: Harness) -> None:
    """The database took the write but Redis did not: the stale entry is invalidated as soon as
    Redis answers again (here: within a second), not left for the rest of its TTL (D8)."""
    if rp.backend.is_fake or rp.backend.is_cluster:
        pytest.skip("CLIENT PAUSE on one real standalone server")
    db: dict[Any, Any] = {1: "old"}
    fast: Any = (
        rp.call_in_loop(lambda: rp.backend.async_client(socket_timeout=0.2))
        if rp.is_async
        else rp.backend.sync_client(socket_timeout=0.2)
    )
    f = make(rp, lambda x, y: db[x], client=fast)
    save = _writer(rp, lambda x, v: db.__setitem__(x, v), f, value=lambda _: db[1])
    assert rp.call(f(1)) == "old"
    admin = rp.backend.sync_client()
    admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")  # the cache update times out
    rp.call(save(1, "new"))
    assert db[1] == "new" and admin.exists(f.key(1)) == 1  # stale for now
    deadline = time.monotonic() + 5
    while admin.exists(f.key(1)) and time.monotonic() < deadline:
        rp.call(asyncio.sleep(0.05)) if rp.is_async else time.sleep(0.05)
    assert admin.exists(f.key(1)) == 0, "the stale entry outlived the outage"
    assert rp.call(f(1)) == "new"


def test_write_through_versions_keep_the_newest(rp: Harness) -> None:
    f = make(rp, lambda x, y: None)
    save = _writer(rp, lambda x, v: v, f, version=lambda v: v["ver"])
    rp.call(save(1, {"ver": 2, "v": "b"}))
    rp.call(save(1, {"ver": 1, "v": "a"}))  # late, older: ignored
    assert rp.call(f.peek(1)) == {"ver": 2, "v": "b"}
    rp.call(save(1, {"ver": 3, "v": "c"}))
    assert rp.call(f.peek(1)) == {"ver": 3, "v": "c"}


def test_write_through_concurrent_writers_leave_the_last_write(rp: Harness) -> None:
    db: dict[str, Any] = {"ver": 0, "v": None}
    lock = threading.Lock()

    def write(x: Any, value: Any) -> Any:
        with lock:  # the database serialises writes and stamps a version
            db["ver"] += 1
            db["v"] = value
            snapshot = dict(db)
        time.sleep(0.001 * (value % 3))  # replies come back out of order
        return snapshot

    f = make(rp, lambda x, y: dict(db))
    save = _writer(rp, write, f, version=lambda r: r["ver"])
    if rp.is_async:
        import asyncio

        async def go() -> None:
            async def one(i: int) -> None:
                await asyncio.sleep(0.001 * (i % 4))
                await save(1, i)

            await asyncio.gather(*(one(i) for i in range(40)))

        rp.call(go())
    else:
        threads = [threading.Thread(target=save, args=(1, i)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert db["ver"] == 40
    assert rp.call(f.peek(1)) == db
    assert rp.call(f(1)) == db


def test_unencodable_result_returned_uncached_with_a_warning(rp: Harness) -> None:
    calls: list[Any] = []

    def body(x: Any, y: Any) -> Any:
        calls.append(x)
        return {1, 2}  # a set: not JSON

    f = make(rp, body)
    with pytest.warns(RuntimeWarning, match="cannot encode"):
        assert rp.call(f(1)) == {1, 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rp.call(f(1))
    assert len(calls) == 2
    assert rp.call(f.peek(1)) is NOT_CACHED
    assert rp.backend.sync_client().exists(f.key(1)) == 0  # and no lease left behind


def test_non_finite_result_returned_uncached_not_read_back_as_none(rp: Harness) -> None:
    calls: list[Any] = []

    def body(x: Any, y: Any) -> Any:
        calls.append(x)
        return {"ratio": float("nan")}

    f = make(rp, body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = rp.call(f(1))
        second = rp.call(f(1))
    assert math.isnan(first["ratio"]) and math.isnan(second["ratio"])
    assert len(calls) == 2  # computed each time: nothing was stored as {"ratio": null}
    assert rp.call(f.peek(1)) is NOT_CACHED


def test_a_value_of_another_type_under_the_key_is_a_miss_and_replaced(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body)
    c = rp.backend.sync_client()
    c.rpush(f.key(1), "planted")
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert rp.call(f(1)) == {"x": 1, "n": 1}  # repaired: the second call is a hit
    assert len(calls) == 1 and c.type(f.key(1)) == b"string"


def test_undecodable_value_is_a_miss_and_replaced(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body)
    c = rp.backend.sync_client()
    c.set(f.key(1), b"\x01garbage")
    assert rp.call(f.peek(1)) is NOT_CACHED
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert len(calls) == 1


def test_corrupted_values_are_overwritten_and_logged_once(
    rp: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    calls, body = counter()
    f = make(rp, body, name="corrupt")
    c = rp.backend.sync_client()
    caplog.set_level(logging.WARNING, logger="redispatterns.cache")
    c.set(f.key(1), b"not ours")  # a foreign string
    c.rpush(f.key(2), "planted")  # another type
    c.set(f.key(3), b"\x01123:0:0|{broken json")  # our header, a payload that no longer decodes
    for x in (1, 2, 3):
        assert rp.call(f(x))["x"] == x  # treated as absent: computed...
        assert rp.call(f(x))["x"] == x  # ...and overwritten: now a hit
        assert c.type(f.key(x)) == b"string" and rp.call(f.peek(x)) == {"x": x, "n": x}
    assert calls == [1, 2, 3]
    lines = [
        r for r in caplog.records if r.name == "redispatterns.cache" and "not a cache entry" in r.getMessage()
    ]
    assert len(lines) == 1 and "logged once" in lines[0].getMessage()
    assert f.stats.corrupt == 3
    assert logging.getLogger("redispatterns.cache").handlers == []  # never configured by the library


def test_a_cold_miss_is_two_round_trips_and_the_next_read_one_get(rp: Harness) -> None:
    if rp.backend.is_fake:
        pytest.skip("round trips are counted on real connections")
    from loadtests.harness import count_round_trips

    _, body = counter()
    f = make(rp, body, tags=["t:{x}"], name="rt")
    rp.call(f(0))  # scripts loaded, connections open
    with count_round_trips() as n:
        rp.call(f(1))
    # the lease script (value or lease), then the store with its tag in one batch (on a Cluster
    # the tag's directory may live on another node: the batch then writes to both at once)
    expected = 2
    if rp.backend.is_cluster:
        from redispatterns._core.cache import tag_dir_key

        node = rp.sync_client.get_node_from_key
        ks = f._rp_cache.spec.keyspace
        expected += node(f.key(1)) != node(tag_dir_key(ks, "t:1"))
    assert n.n == expected
    with count_round_trips() as n:
        assert rp.call(f(1)) == {"x": 1, "n": 2}  # the second computation (f(0) was the first)
    assert n.n == 1


def test_callers_in_one_process_never_wait_out_their_own_lease(rp: Harness) -> None:
    # many callers of one cold key: whichever got the lease may end up following another's
    # single-flight; that leader adopts the lease instead of waiting lock_wait for it
    calls, body = counter()
    f = make(rp, body, sleep=0.05, lock_wait=120, name="adopt")
    for round_ in range(5):
        if rp.is_async:

            async def burst(x: int) -> list[Any]:
                return list(await asyncio.gather(*(f(x) for _ in range(20))))

            results = rp.call(asyncio.wait_for(burst(round_), 20))
        else:
            results = []
            lock = threading.Lock()

            def one(x: int = round_, out: list[Any] = results, lock: threading.Lock = lock) -> None:
                r = f(x)
                with lock:
                    out.append(r)

            threads = [threading.Thread(target=one, daemon=True) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert not any(t.is_alive() for t in threads), "a caller waited out its own lease"
        assert len(results) == 20 and all(r["x"] == round_ for r in results)
    assert sorted(calls) == [0, 1, 2, 3, 4]  # one computation per key


def test_mount_prefix_ttl_and_modes(rp: Harness) -> None:
    _, body = counter()
    m = rpm.Mount(prefix="app:", ttl=42)
    f = make(rp, body, ttl=None, mount=m, name="m")
    rp.call(f(1))
    key = f.key(1)
    assert key.startswith("app:cache:")
    c = rp.backend.sync_client()
    # the mount's 42 s plus up to 10% jitter, minus the time since the write (PTTL counts down)
    assert 41_000 <= c.pttl(key) <= 46_200
    ro = make(rp, body, ttl=None, mount=rpm.Mount(prefix="app:", ttl=42, mode="read"), name="m")
    assert rp.call(ro(1)) == {"x": 1, "n": 1}  # reads what the writer stored
    assert rp.call(ro(2)) == {"x": 2, "n": 2}
    assert rp.call(ro(2)) == {"x": 2, "n": 3}  # ...but never writes
    assert c.exists(ro.key(2)) == 0
    with pytest.raises(PermissionError):
        rp.call(ro.invalidate(1))
    with pytest.raises(PermissionError):
        make(rp, body, mount=rpm.Mount(prefix="w:", mode="write"))


def test_decoration_time_checks(rp: Harness) -> None:
    def f(user_id: int, db: Any = None) -> int:
        return user_id

    with pytest.raises(ValueError, match="names uid"):
        cached(ttl=1, key="user:{uid}")(f)
    with pytest.raises(ValueError, match="no such parameter"):
        cached(ttl=1, ignore=("nope",))(f)
    with pytest.raises(ValueError, match="needs a TTL"):
        cached(f)
    with pytest.raises(ValueError, match="positive"):
        cached(ttl=0)
    with pytest.raises(TypeError):
        cached(ttl="60")  # type: ignore[call-overload]
    g: Any = cached(ttl=1, key="user:{user_id}", ignore=("db",), client=rp.sync_client)(f)
    assert g.key(7, db=object()).endswith(":k:user:7")
    h: Any = cached(ttl=1, client=rp.sync_client)(f)
    with pytest.raises(TypeError, match="stable cache key"):
        h(1, db=object())
    with pytest.raises(TypeError, match="target must be"):
        write_through(cast(Any, f))


def test_a_dead_lease_holder_delays_callers_by_lock_wait_only(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, lock_wait=0.2, lock_ttl=30)
    c = rp.backend.sync_client()
    # a cold fill's lease sits in the value's own key: a holder that will never store
    c.set(f.key(1), b"\x02someone-who-crashed", px=30_000)
    assert rp.call(f.peek(1)) is NOT_CACHED  # a lease is no value
    assert rp.call(f(1)) == {"x": 1, "n": 1}  # waited ~0.2 s, then computed itself
    assert rp.call(f.peek(1)) == {"x": 1, "n": 1}  # ...and stored it over the abandoned lease
    assert len(calls) == 1 and f.stats.corrupt == 0  # a lease is not a corrupt value


def test_version_bump_orphans_entries_and_hooks_never_break_calls(rp: Harness) -> None:
    _, body = counter()
    seen: list[str] = []

    def hook(outcome: str, key: str) -> None:
        seen.append(outcome)
        raise RuntimeError("metrics backend down")

    v1 = make(rp, body, name="v", version=1, on_event=hook)
    v2 = make(rp, body, name="v", version=2)
    assert rp.call(v1(1)) == {"x": 1, "n": 1}
    assert rp.call(v1(1)) == {"x": 1, "n": 1}
    assert rp.call(v2(1)) == {"x": 1, "n": 2}
    assert v1.key(1) != v2.key(1)
    assert seen == ["miss", "hit"]


def test_invalidate_during_a_slow_fill_keeps_the_old_result_out(rp: Harness) -> None:
    db = {"v": "old"}  # the function reads it, then takes 0.3 s: its result is stale by then
    if rp.is_async:
        import asyncio

        began = asyncio.Event()

        async def slow(x: Any) -> Any:
            v = db["v"]
            began.set()
            await asyncio.sleep(0.3)
            return v

        f: Any = cached(ttl=60, client=rp.client)(slow)

        async def go() -> Any:
            task = asyncio.ensure_future(f(1))
            await began.wait()  # the fill has read the old value (a cold cluster client is slow)
            db["v"] = "new"
            await f.invalidate(1)
            return await task

        got = rp.call(go())
    else:
        sbegan = threading.Event()

        def sslow(x: Any) -> Any:
            v = db["v"]
            sbegan.set()
            time.sleep(0.3)
            return v

        f = cached(ttl=60, client=rp.client)(sslow)
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(f(1)))
        t.start()
        assert sbegan.wait(10)  # the fill has read the old value
        db["v"] = "new"
        f.invalidate(1)
        t.join()
        got = out[0]
    assert got == "old"  # the caller still gets what it computed...
    assert rp.call(f.peek(1)) is NOT_CACHED  # ...but the stale result was not stored
    assert rp.call(f(1)) == "new"  # and the next caller starts a fill at once


def test_a_computation_longer_than_the_lease_is_still_stored(rp: Harness) -> None:
    calls, body = counter()
    f = make(rp, body, lock_ttl=0.1, sleep=0.3)
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert rp.call(f.peek(1)) == {"x": 1, "n": 1}
    assert rp.call(f(1)) == {"x": 1, "n": 1}
    assert len(calls) == 1


def test_a_fill_whose_lease_was_retaken_stores_nothing_and_leaves_the_new_lease(rp: Harness) -> None:
    c = rp.backend.sync_client()
    f: Any = None

    def body(x: Any, y: Any = None) -> Any:
        # our lease (0.1 s) has expired during the 0.3 s computation; another caller took a new
        # one: its result is newer, so ours must not replace it
        assert c.get(f.key(1)) is None
        c.set(f.key(1), b"\x02another-caller", px=30_000)
        return {"x": x}

    f = make(rp, body, lock_ttl=0.1, sleep=0.3)
    assert rp.call(f(1)) == {"x": 1}  # the caller gets its result...
    assert c.get(f.key(1)) == b"\x02another-caller"  # ...which was not stored over the new lease
    assert f.stats.counts["uncached"] == 1 and f.stats.corrupt == 0


@pytest.mark.parametrize("flavour", ["async"])
def test_async_followers_survive_a_cancelled_leader(rp: Harness) -> None:
    import asyncio

    runs: list[int] = []

    async def slow(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.2)
        return x * 2

    f: Any = cached(ttl=60, client=rp.client, lock_ttl=60)(slow)

    async def go() -> list[Any]:
        leader = asyncio.ensure_future(f(1))
        await asyncio.sleep(0.05)
        followers = [asyncio.ensure_future(f(1)) for _ in range(5)]
        await asyncio.sleep(0.05)
        leader.cancel()
        # the cancelled leader's lease is released: nobody waits out its 60 s
        done = await asyncio.wait_for(asyncio.gather(*followers), timeout=20)
        assert leader.cancelled()
        return list(done)

    rp.call(f(0))  # warm the connections, so the leader is computing when it is cancelled
    assert rp.call(go()) == [2] * 5
    # the cancelled leader's run (unless cancelled before computing), then one follower's
    assert runs.count(1) in (1, 2)


def test_write_through_by_position_or_keyword_writes_the_same_entry(rp: Harness) -> None:
    """A write given every argument by position takes the cached function's arguments straight
    from them (no signature binding): the same key as a call by keyword, renames included."""
    from redispatterns._cache_write import _key_mapper

    def read(user_id: int, field: str) -> Any:
        return None

    def write(field: str, uid: int, value: Any) -> Any:
        return value

    def write_default(field: str, uid: int, value: Any = None) -> Any:
        return value

    class Repo:
        @cached(ttl=1, client=rp.sync_client)
        def get(self, user_id: int, field: str) -> Any:
            return None

        def put(self, field: str, user_id: int, value: Any) -> Any:
            return value

    f: Any = cached(ttl=1, client=rp.sync_client)(read)
    for target, w, rename, call in (
        (f, write, {"user_id": "uid"}, ("name", 7, "x")),
        (f, write_default, {"user_id": "uid"}, ("name", 7, "x")),  # a default: bound, same keys
        (Repo.get, Repo.put, {}, (Repo(), "name", 7, "x")),
    ):
        h = target._rp_cache
        keys = _key_mapper(h, w, rename)
        names = list(inspect.signature(w).parameters)
        by_position = keys(call, {})
        by_keyword = keys((), dict(zip(names, call, strict=True)))
        assert (
            by_position.value
            == by_keyword.value
            == h.keys((7, "name") if target is f else (None, 7, "name"), {}).value
        )
    # a real write-through by position stores where the cached function reads
    save: Any = write_through(f, args={"user_id": "uid"})(write)
    save("name", 7, "v")
    assert f.peek(7, "name") == "v"
