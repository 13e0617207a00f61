"""The near tier's bookkeeping: bounds, expiry, and reads that lose to invalidations."""

from __future__ import annotations

import random
import threading

import pytest

from redispatterns._core.near import ENTRY_OVERHEAD, NearStore


def fill(store: NearStore, key: str, raw: bytes, expires_at: float = 100.0) -> bool:
    return store.finish(store.begin(key), raw, expires_at)


def test_a_stored_value_is_a_hit_until_the_servers_deadline() -> None:
    s = NearStore(10, 10_000)
    assert s.get("a", now=0.0) is None
    assert fill(s, "a", b"1", expires_at=5.0)
    assert s.get("a", now=4.9) == b"1"
    assert s.get("a", now=5.0) is None  # past the deadline: a miss, and gone
    assert len(s) == 0
    assert (s.stats.hits, s.stats.misses, s.stats.entries, s.stats.bytes) == (1, 2, 0, 0)


def test_bounded_by_entries_least_recently_used_first() -> None:
    s = NearStore(2, 10_000)
    fill(s, "a", b"1")
    fill(s, "b", b"2")
    assert s.get("a", now=0.0) == b"1"  # a is now the most recent
    fill(s, "c", b"3")
    assert s.get("b", now=0.0) is None and s.get("a", now=0.0) == b"1" and s.get("c", now=0.0) == b"3"
    assert s.stats.evictions == 1 and s.stats.entries == 2


def test_bounded_by_bytes_and_a_value_too_large_is_not_kept() -> None:
    per = ENTRY_OVERHEAD + 1 + 100
    s = NearStore(100, 2 * per)
    fill(s, "a", b"x" * 100)
    fill(s, "b", b"x" * 100)
    fill(s, "c", b"x" * 100)
    assert s.get("a", now=0.0) is None and s.stats.bytes == 2 * per
    assert not fill(s, "d", b"x" * (3 * per))
    assert s.stats.refused == 1 and len(s) == 2


def test_an_invalidation_during_the_read_keeps_its_value_out() -> None:
    s = NearStore(10, 10_000)
    t = s.begin("a")
    s.drop(["a"])  # the server's write landed while our read was in flight
    assert not s.finish(t, b"old", 100.0)
    assert s.get("a", now=0.0) is None
    assert s.stats.refused == 1 and s.stats.invalidations == 1
    assert fill(s, "a", b"new")  # the next read is stored again


def test_an_invalidation_after_the_store_removes_it() -> None:
    s = NearStore(10, 10_000)
    fill(s, "a", b"1")
    s.drop(["a", "never-read"])
    assert s.get("a", now=0.0) is None and s.stats.invalidations == 2


def test_a_flush_empties_and_no_read_begun_before_it_is_stored() -> None:
    s = NearStore(10, 10_000)
    fill(s, "a", b"1")
    t = s.begin("b")
    s.flush()
    assert len(s) == 0 and s.stats.bytes == 0 and s.stats.flushes == 1
    assert not s.finish(t, b"2", 100.0)
    assert fill(s, "b", b"3")


def test_two_reads_of_one_key_in_flight_are_both_poisoned() -> None:
    s = NearStore(10, 10_000)
    t1, t2 = s.begin("a"), s.begin("a")
    s.drop(["a"])
    assert not s.finish(t1, b"x", 100.0) and not s.finish(t2, b"x", 100.0)
    assert s._inflight == {}


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        NearStore(0, 10)


def test_threads_never_read_a_value_older_than_the_last_completed_invalidation() -> None:
    """Writers bump a key's version on the 'server' then invalidate; readers read through the
    tier. A hit may never be older than the newest version whose invalidation had completed
    before the hit began."""
    s = NearStore(8, 1 << 20, lock=threading.Lock())
    server = {f"k{i}": 0 for i in range(4)}
    server_lock = threading.Lock()
    invalidated = dict.fromkeys(server, 0)  # newest version whose drop() has returned
    stale: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def writer() -> None:
        rnd = random.Random(1)
        while not stop.is_set():
            key = rnd.choice(list(server))
            with server_lock:
                server[key] += 1
                version = server[key]
            s.drop([key])
            invalidated[key] = max(invalidated[key], version)

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(20_000):
            key = rnd.choice(list(server))
            floor = invalidated[key]
            raw = s.get(key, now=0.0)
            if raw is not None:
                if int(raw) < floor:
                    stale.append((key, int(raw), floor))
                continue
            ticket = s.begin(key)
            with server_lock:
                value = server[key]
            s.finish(ticket, str(value).encode(), 100.0)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads[2:]:
        t.join()
    stop.set()
    for t in threads[:2]:
        t.join()
    assert stale == []
    assert s.stats.hits > 0 and s.stats.invalidations > 0  # the race was exercised


def test_the_bytes_counted_are_the_bytes_held() -> None:
    # tracemalloc over 5,000 entries of a small JSON document (encoder output made compact, as
    # the shells do): what max_bytes counts is within 10% of what the entries take
    import tracemalloc

    import orjson

    from redispatterns._core.near import compact

    n = 5_000
    s = NearStore(n, 1 << 40, threading.Lock())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            raw = compact(orjson.dumps({"id": i, "name": "Ada Lovelace", "roles": ["admin", "dev"]}))
            fill(s, f"app:user:{{kv}}:k:user:{i:06}", raw)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert s.stats.entries == n
    assert abs(s.stats.bytes - held) / held < 0.10, (s.stats.bytes / n, held / n)


def test_compact_copies_to_the_exact_size() -> None:
    from redispatterns._core.near import compact

    raw = b"x" * 100
    out = compact(raw)
    assert out == raw and out is not raw and type(out) is bytes
