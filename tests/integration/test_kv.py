"""The kv facade on every backend and flavour: the 11 functions, modes, quotas, TTLs, buffering."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from redispatterns import Mount, QuotaExceeded, SchemaError
from redispatterns.kv import KV, AsyncKV
from redispatterns.mount import Namespace, resolve
from redispatterns.testing.plugin import Harness

USER = "app:user:"
BASE = "app:user:{kv}:"


def make(rp_: Harness, mounts: dict[str, Mount] | None = None, client: Any = None, **kw: Any) -> Any:
    kw.setdefault("write_policy", "immediate")
    cls = rp_.pick(KV, AsyncKV)
    return cls(client if client is not None else rp_.client, mounts or {"user": Mount(prefix=USER)}, **kw)


def run_many(rp_: Harness, calls: Sequence[Callable[[], Any]], workers: int = 8) -> list[Any]:
    """Run ``calls`` concurrently (threads, or asyncio tasks); each result or its exception.

    The first call runs alone: redis-py's asyncio cluster client can fail connections that
    several tasks open at once on a cold client (seen with redis-py 8.1).
    """
    try:
        first: list[Any] = [rp_.call(calls[0]())]
    except Exception as exc:
        first = [exc]
    calls = calls[1:]
    if rp_.is_async:

        async def main() -> list[Any]:
            sem = asyncio.Semaphore(workers)

            async def one(c: Callable[[], Any]) -> Any:
                async with sem:
                    try:
                        return await c()
                    except Exception as exc:
                        return exc

            return await asyncio.gather(*(one(c) for c in calls))

        return first + list(rp_.call(main()))

    def capture(c: Callable[[], Any]) -> Any:
        try:
            return c()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(workers) as pool:
        return first + list(pool.map(capture, calls))


def raw_keys(rp_: Harness) -> set[bytes]:
    c = rp_.sync_client
    if rp_.backend.is_cluster:
        return set(c.keys(target_nodes="primaries"))
    return set(c.keys())


def test_the_eleven_functions(rp: Harness) -> None:
    schema = {"theme": {"type": "string", "default": "light"}, "tags": {"type": "list", "default": []}}
    kv = make(rp, {"user": rp_mount(USER, ttl=60), "prefs": rp_mount("app:prefs:", schema=schema)})
    assert rp.call(kv.get("user", "missing")) is None
    assert rp.call(kv.get_or("user", "missing", 7)) == 7
    assert rp.call(kv.set("user", "name", "Ada")) is True
    assert rp.call(kv.set("user", "profile", {"age": 36})) is True
    assert rp.call(kv.merge("user", "profile", {"city": "London"})) is True
    assert rp.call(kv.merge("user", "fresh", {"a": 1})) is True
    assert rp.call(kv.get("user", "profile")) == {"age": 36, "city": "London"}
    assert rp.call(kv.get_or("user", "name", 7)) == "Ada"
    assert rp.call(kv.has("user", "name")) is True
    assert rp.call(kv.has("user", "nope")) is False
    assert rp.call(kv.keys("user")) == ["fresh", "name", "profile"]
    assert rp.call(kv.keys("user", start_after="fresh", limit=1)) == ["name"]
    assert rp.call(kv.keys("user", start_after="profile")) == []
    assert rp.call(kv.get_all("user")) == {
        "fresh": {"a": 1},
        "name": "Ada",
        "profile": {"age": 36, "city": "London"},
    }
    info = rp.call(kv.info("user", "name"))
    assert info.size == len(b'"Ada"') and info.content_type == "application/json"
    assert 0 < info.ttl <= 60 and abs(info.updated_at - time.time()) < 60
    assert rp.call(kv.info("user", "nope")) is None
    assert rp.call(kv.delete("user", "name")) is True
    assert rp.call(kv.delete("user", "name")) is False
    assert rp.call(kv.get("user", "name")) is None
    # schema mount: defaults, then values, then clear restores the defaults
    assert rp.call(kv.get("prefs", "theme")) == "light"
    assert rp.call(kv.get_all("prefs")) == {"theme": "light", "tags": []}
    assert rp.call(kv.set("prefs", "theme", "dark")) is True
    assert rp.call(kv.get("prefs", "theme")) == "dark"
    assert kv.schema("prefs") == [
        {"key": "theme", "type": "string", "default": "light"},
        {"key": "tags", "type": "list", "default": []},
    ]
    assert kv.schema("user") == []
    assert [m["name"] for m in kv.mounts()] == ["user", "prefs"]
    assert kv.mounts()[0] == {"name": "user", "mode": "read-write", "prefix": USER}
    assert rp.call(kv.clear("prefs")) is True
    assert rp.call(kv.get("prefs", "theme")) == "light"
    assert rp.call(kv.keys("user")) == ["fresh", "profile"]  # clear touched only its mount
    assert rp.call(kv.clear("user")) is True
    assert rp.call(kv.keys("user")) == []
    assert raw_keys(rp) == set()  # records and bookkeeping are gone


def rp_mount(prefix: str, **kw: Any) -> Mount:
    return Mount(prefix=prefix, **kw)


def test_schema_refuses_unknown_keys_and_wrong_types(rp: Harness) -> None:
    kv = make(rp, {"p": rp_mount("app:p:", schema={"n": "number", "on": {"type": "bool", "default": False}})})
    with pytest.raises(SchemaError):
        rp.call(kv.set("p", "other", 1))
    with pytest.raises(SchemaError):
        rp.call(kv.get("p", "other"))
    with pytest.raises(TypeError):
        rp.call(kv.set("p", "n", "1"))
    with pytest.raises(TypeError):
        rp.call(kv.set("p", "n", True))
    assert rp.call(kv.set("p", "n", 1.5)) is True
    assert rp.call(kv.get("p", "on")) is False
    assert raw_keys(rp) and rp.call(kv.keys("p")) == ["n"]


def test_mode_matrix(rp: Harness) -> None:
    kv = make(
        rp,
        {
            "ro": Mount("read", "app:ro:"),
            "wo": Mount("write", "app:wo:"),
            "rw": Mount("read-write", "app:rw:"),
        },
    )
    writes: list[Callable[[str], Any]] = [
        lambda m: kv.set(m, "k", 1),
        lambda m: kv.merge(m, "doc", {"a": 1}),
        lambda m: kv.delete(m, "k"),
        lambda m: kv.clear(m),
    ]
    reads: list[Callable[[str], Any]] = [
        lambda m: kv.get(m, "k"),
        lambda m: kv.get_or(m, "k", 1),
        lambda m: kv.keys(m),
        lambda m: kv.has(m, "k"),
        lambda m: kv.get_all(m),
        lambda m: kv.info(m, "k"),
    ]
    for op in writes:
        with pytest.raises(PermissionError, match="read-only"):
            rp.call(op("ro"))
        rp.call(op("wo"))
        rp.call(op("rw"))
    for op in reads:
        with pytest.raises(PermissionError, match="write-only"):
            rp.call(op("wo"))
        rp.call(op("ro"))
        rp.call(op("rw"))


def test_entry_quota_holds_under_eight_concurrent_writers(rp: Harness) -> None:
    kv = make(rp, {"user": rp_mount(USER, max_entries=25)})
    calls = [lambda i=i: kv.set("user", f"k{i:03}", {"i": i}) for i in range(120)]
    results = run_many(rp, calls)
    ok = [r for r in results if r is True]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(ok) == 25 and len(refused) == 95, results[:5]
    assert {e.quota for e in refused} == {"max_entries"}
    assert len(rp.call(kv.keys("user"))) == 25
    records = [k for k in raw_keys(rp) if k.startswith(b"app:user:{kv}:k:")]
    assert len(records) == 25  # nothing was written by a refused call
    # overwriting an existing key is not a new entry; deleting frees a slot
    assert rp.call(kv.set("user", rp.call(kv.keys("user"))[0], "x")) is True
    assert rp.call(kv.delete("user", rp.call(kv.keys("user"))[0])) is True
    assert rp.call(kv.set("user", "new", 1)) is True


def test_store_size_quota_holds_under_concurrent_writers(rp: Harness) -> None:
    mounts = {"a": rp_mount("app:a:"), "b": rp_mount("app:b:")}
    kv = make(rp, mounts, max_store_size=1000)
    value = "x" * 98  # 100 bytes encoded
    calls = [lambda i=i: kv.set("ab"[i % 2], f"k{i}", value) for i in range(40)]
    results = run_many(rp, calls)
    assert sum(r is True for r in results) == 10
    assert all(r is True or (isinstance(r, QuotaExceeded) and r.quota == "max_store_size") for r in results)
    used = sum(int(rp.sync_client.get(f"app:{m}:{{kv}}:u") or 0) for m in "ab")
    assert used == 1000
    with pytest.raises(QuotaExceeded) as err:
        rp.call(kv.set("a", "big", "y" * 500))
    assert err.value.limit == 1000
    # shrinking a value frees room
    name = rp.call(kv.keys("a"))[0]
    rp.call(kv.set("a", name, "s"))
    assert rp.call(kv.set("b", "fits", "z" * 90)) is True


def test_value_size_quota(rp: Harness) -> None:
    kv = make(rp, {"user": rp_mount(USER, max_value_size=10)})
    with pytest.raises(QuotaExceeded) as err:
        rp.call(kv.set("user", "k", "x" * 20))
    assert err.value.quota == "max_value_size" and err.value.limit == 10
    assert rp.call(kv.has("user", "k")) is False
    assert rp.call(kv.set("user", "k", "x" * 8)) is True


def test_mounts_in_other_slots_share_the_store_budget(rp: Harness) -> None:
    kv = make(rp, {"a": rp_mount("{ta}:a:"), "b": rp_mount("{tb}:b:")}, max_store_size=300)
    assert rp.call(kv.set("a", "k", "x" * 198)) is True  # 200 bytes
    with pytest.raises(QuotaExceeded):
        rp.call(kv.set("b", "k", "x" * 198))
    assert rp.call(kv.set("b", "k", "x" * 98)) is True
    assert rp.call(kv.get("b", "k")) == "x" * 98


def test_a_flush_over_several_slots_is_one_script_per_slot(rp: Harness) -> None:
    """Mounts with their own tags: the other slots' usage is read first, then one pipeline."""
    from loadtests.harness import count_round_trips

    mounts = {"a": rp_mount("{ta}:a:"), "b": rp_mount("{tb}:b:"), "c": rp_mount("{tc}:c:")}
    kv = make(rp, mounts, max_store_size=300, write_policy="dispose")
    rp.call(kv.set("c", "k", "x" * 98))  # 100 bytes
    rp.call(kv.flush())
    rp.call(kv.set("a", "k", "x" * 98))
    rp.call(kv.set("b", "k", "x" * 98))
    rp.call(kv.set("b", "k2", "x" * 8))
    rp.call(kv.set("c", "gone", 1))
    rp.call(kv.delete("c", "gone"))
    with count_round_trips() as rt:
        assert rp.call(kv.flush()) == 4
    if not rp.backend.is_cluster and not rp.backend.is_fake:
        assert rt.n == 2  # the usage read, then the pipeline
    assert rp.call(kv.get_all("a")) == {"k": "x" * 98}
    assert rp.call(kv.get_all("b")) == {"k": "x" * 98, "k2": "x" * 8}
    assert rp.call(kv.get_all("c")) == {"k": "x" * 98}
    # each slot counts the others as they were before the flush (documented: best effort)
    used = {m: int(rp.sync_client.get(f"{{t{m}}}:{m}:kv:u") or 0) for m in "abc"}
    assert used == {"a": 100, "b": 110, "c": 100}
    rp.call(kv.set("a", "big", "x" * 48))
    with pytest.raises(QuotaExceeded) as err:
        rp.call(kv.flush())
    assert err.value.quota == "max_store_size" and err.value.mount == "a"


def test_ttl_is_set_with_the_write_and_overridable(rp: Harness) -> None:
    kv = make(rp, {"user": rp_mount(USER, ttl=100)})
    rp.call(kv.set("user", "a", 1))
    rp.call(kv.set("user", "b", 1, ttl=5))
    rp.call(kv.merge("user", "c", {"x": 1}))
    c = rp.sync_client
    assert 95_000 < c.pttl(BASE + "k:a") <= 100_000
    assert 0 < c.pttl(BASE + "k:b") <= 5_000
    assert 95_000 < c.pttl(BASE + "k:c") <= 100_000
    persistent = make(rp, {"p": rp_mount("app:p:")})
    rp.call(persistent.set("p", "a", 1))
    assert c.pttl("app:p:{kv}:k:a") == -1


@pytest.mark.parametrize("policy", ["immediate", "dispose"])
def test_info_follows_every_write_even_an_overwrite_that_leaves_the_metadata_as_it_is(
    rp: Harness, policy: str
) -> None:
    """An overwrite of the same size, TTL and type skips the metadata write: its time comes from
    its deadline minus its TTL, so ``updated_at`` still moves; a TTL or type change rewrites it."""
    kv = make(rp, {"user": rp_mount(USER, ttl=100), "p": rp_mount("app:p:")}, write_policy=policy)

    def write(mount: str, key: str, value: Any, ttl: float | None = None) -> Any:
        rp.call(kv.set(mount, key, value, ttl=ttl))
        if policy == "dispose":
            rp.call(kv.flush())
        return rp.call(kv.info(mount, key))

    first = write("user", "a", {"n": 1})
    time.sleep(0.05)
    second = write("user", "a", {"n": 2})  # same size, TTL and type
    assert second.size == first.size == len(b'{"n":1}') and second.content_type == "application/json"
    assert 0.04 < second.updated_at - first.updated_at < 5 and abs(second.updated_at - time.time()) < 5
    assert 95 < second.ttl <= 100
    time.sleep(0.05)
    third = write("user", "a", {"n": 3}, ttl=30)  # another TTL
    assert third.updated_at - second.updated_at > 0.04 and 25 < third.ttl <= 30
    fourth = write("user", "a", b"\x01\x02")  # another type, back to the mount's TTL
    assert fourth.content_type == "application/octet-stream" and 95 < fourth.ttl <= 100
    assert fourth.updated_at >= third.updated_at
    persistent = write("p", "a", 1)  # no TTL: the write's time is in the metadata
    time.sleep(0.05)
    again = write("p", "a", 2)
    assert persistent.ttl is None and again.updated_at - persistent.updated_at > 0.04
    assert rp.call(kv.keys("user")) == ["a"] and rp.call(kv.get_all("p")) == {"a": 2}


@pytest.mark.parametrize("policy", ["immediate", "dispose"])
def test_bookkeeping_in_the_earlier_form_is_read_and_overwritten_exactly(rp: Harness, policy: str) -> None:
    """A record whose metadata is in the earlier form (``size:updated_ms:type`` with a TTL, no
    pads) reads as it is, and its overwrites keep the byte count exact."""
    c = rp.sync_client
    kv = make(rp, {"user": rp_mount(USER, ttl=100, max_entries=5)}, write_policy=policy)
    now_ms = int(time.time() * 1000)
    c.set(BASE + "k:a", b'{"n":1}', px=100_000)  # the record and its bookkeeping, by hand
    c.zadd(BASE + "i", {"a": 0})
    c.zadd(BASE + "x", {"a": now_ms + 100_000})
    c.hset(BASE + "m", "a", f"7:{now_ms - 5000}:application/json")
    c.set(BASE + "u", 7)
    before = rp.call(kv.info("user", "a"))
    assert before.size == 7 and abs(before.updated_at - (now_ms - 5000) / 1000) < 0.01

    def write(value: Any) -> None:
        rp.call(kv.set("user", "a", value))
        if policy == "dispose":
            rp.call(kv.flush())

    write({"n": 2})  # the same size: the metadata takes the TTL form
    assert int(c.get(BASE + "u")) == 7 and c.hget(BASE + "m", "a") == b"7;100000;application/json"
    after = rp.call(kv.info("user", "a"))
    assert after.size == 7 and after.updated_at - before.updated_at > 4
    write({"n": 22})  # one byte more
    assert int(c.get(BASE + "u")) == 8 and rp.call(kv.keys("user")) == ["a"]
    assert rp.call(kv.get("user", "a")) == {"n": 22}


def test_both_write_paths_store_the_same_metadata_and_byte_count(rp: Harness) -> None:
    """A single set sends its metadata whole (size first); a flush builds it in the script: for
    a value of multi-byte UTF-8 they agree byte for byte, so an overwrite by the other path with
    the same size, TTL and type leaves the metadata and the byte counter as they are."""
    c = rp.sync_client
    mounts = {"user": rp_mount(USER, ttl=100)}
    now = make(rp, mounts)
    later = make(rp, mounts, write_policy="dispose")
    size = len('"héllo wörld"'.encode())  # 15 bytes for 13 characters
    rp.call(now.set("user", "a", "héllo wörld"))
    assert c.hget(BASE + "m", "a") == f"{size};100000;application/json".encode()
    assert int(c.get(BASE + "u")) == size
    rp.call(later.set("user", "a", "wörld héllo"))  # the same size through kv_flush
    rp.call(later.flush())
    assert c.hget(BASE + "m", "a") == f"{size};100000;application/json".encode()
    assert int(c.get(BASE + "u")) == size
    rp.call(now.set("user", "a", "héllo"))  # shorter through kv_set: the counter follows
    short = len('"héllo"'.encode())  # 8 bytes
    assert c.hget(BASE + "m", "a") == f"{short};100000;application/json".encode()
    assert int(c.get(BASE + "u")) == short
    assert rp.call(now.get("user", "a")) == "héllo" and 95 < rp.call(now.info("user", "a")).ttl <= 100


@pytest.mark.parametrize("policy", ["immediate", "dispose"])
def test_the_bookkeeping_keeps_its_hashed_encodings_from_the_first_key(rp: Harness, policy: str) -> None:
    """A pad entry over 64 bytes keeps the metadata hash and expiry zset out of the listpack
    encoding (scanned on every write) however few records a mount holds; it never shows as a
    key, and a cleared mount leaves nothing behind."""
    if rp.backend.is_fake:
        pytest.skip("fakeredis has no encodings")
    kv = make(rp, {"user": rp_mount(USER, ttl=100, max_entries=3)}, write_policy=policy)
    for k in ("a", "b", "c"):
        rp.call(kv.set("user", k, 1))
    if policy == "dispose":
        rp.call(kv.flush())
    c = rp.sync_client
    assert c.object("encoding", BASE + "m") == b"hashtable"
    assert c.object("encoding", BASE + "x") == b"skiplist"
    assert rp.call(kv.keys("user")) == ["a", "b", "c"] and set(rp.call(kv.get_all("user"))) == {"a", "b", "c"}
    if policy == "dispose":
        rp.call(kv.set("user", "d", 1))
    with pytest.raises(QuotaExceeded):  # the pads take no entry's place
        rp.call(kv.flush() if policy == "dispose" else kv.set("user", "d", 1))
    assert int(c.get(BASE + "u")) == 3
    rp.call(kv.clear("user"))
    assert not raw_keys(rp)


def test_expired_records_leave_the_index_and_free_the_quota(rp: Harness) -> None:
    kv = make(rp, {"user": rp_mount(USER, max_entries=2)})
    rp.call(kv.set("user", "a", 1, ttl=0.05))
    rp.call(kv.set("user", "b", 1, ttl=0.05))
    time.sleep(0.15)
    assert rp.call(kv.keys("user")) == []
    assert rp.call(kv.has("user", "a")) is False
    assert rp.call(kv.info("user", "a")) is None
    assert rp.call(kv.delete("user", "a")) is False
    rp.call(kv.set("user", "c", 1))
    assert rp.call(kv.set("user", "d", 1)) is True
    assert int(rp.sync_client.get(BASE + "u")) == 2


@pytest.mark.parametrize("sort_page", [10_000, 7])
def test_get_all_reads_every_live_record_in_one_sort(
    rp: Harness, monkeypatch: pytest.MonkeyPatch, sort_page: int
) -> None:
    """SORT ... GET reads names and values together; past a page the rest comes by name."""
    from redispatterns._core import kv as core

    monkeypatch.setattr(core, "SORT_PAGE", sort_page)
    kv = make(rp, {"user": rp_mount(USER), "other": rp_mount("app:other:")}, write_policy="dispose")
    model: dict[str, Any] = {f"k{i:04}": {"i": i, "s": "é" * (i % 3)} for i in range(1500)}
    model["raw"] = b"\xff\x00bytes"
    model["we*ird ke{y}"] = [None, 1.5]
    for k, v in model.items():
        rp.call(kv.set("user", k, v))
    rp.call(kv.set("other", "k0001", "not mine"))
    rp.call(kv.set("user", "gone", 1, ttl=0.05))
    rp.call(kv.flush())
    time.sleep(0.1)
    got = rp.call(kv.get_all("user"))
    assert got == model
    assert list(got) == sorted(model, key=str.encode)  # in key order
    assert rp.call(kv.get_all("other")) == {"k0001": "not mine"}


def test_concurrent_merges_lose_no_field(rp: Harness) -> None:
    kv = make(rp)
    calls = [lambda i=i: kv.merge("user", "doc", {f"f{i}": i}) for i in range(40)]
    assert all(r is True for r in run_many(rp, calls))
    assert rp.call(kv.get("user", "doc")) == {f"f{i}": i for i in range(40)}


def test_merge_refuses_a_non_dict(rp: Harness) -> None:
    kv = make(rp)
    rp.call(kv.set("user", "n", 3))
    with pytest.raises(TypeError):
        rp.call(kv.merge("user", "n", {"a": 1}))
    with pytest.raises(TypeError):
        rp.call(kv.merge("user", "n", [1]))
    assert rp.call(kv.get("user", "n")) == 3


def test_dispose_buffers_until_flush(rp: Harness) -> None:
    kv = make(rp, {"user": rp_mount(USER, max_entries=3)}, write_policy="dispose")
    assert rp.call(kv.set("user", "a", {"x": 1})) is True
    assert rp.call(kv.merge("user", "a", {"y": 2})) is True
    assert rp.call(kv.merge("user", "m", {"z": 3})) is True
    assert rp.call(kv.set("user", "gone", 1)) is True
    assert rp.call(kv.delete("user", "gone")) is True
    assert raw_keys(rp) == set()  # nothing sent yet
    assert kv.pending == 3
    assert rp.call(kv.get("user", "a")) == {"x": 1, "y": 2}  # reads see buffered writes
    assert rp.call(kv.get("user", "m")) == {"z": 3}
    assert rp.call(kv.has("user", "gone")) is False
    assert rp.call(kv.flush()) == 3
    assert kv.pending == 0
    assert rp.sync_client.exists(BASE + "k:a", BASE + "k:m") == 2
    immediate = make(rp)
    assert rp.call(immediate.get("user", "a")) == {"x": 1, "y": 2}
    # quota refusals surface at flush; the other writes are written
    for k in ("b", "c"):
        rp.call(kv.set("user", k, 1))
    with pytest.raises(QuotaExceeded):
        rp.call(kv.flush())
    assert len(rp.call(immediate.keys("user"))) == 3
    # listing flushes first, so it sees buffered writes
    rp.call(kv.delete("user", "a"))
    assert "a" not in rp.call(kv.keys("user"))


def test_a_flush_gives_expired_records_place_back_to_both_quotas(rp: Harness) -> None:
    """A flush purges a mount's expired bookkeeping when it writes a new key there, and every
    other mount of the slot only when a write would be refused; then looks again."""
    mounts = {"user": rp_mount(USER, max_entries=2), "other": rp_mount("app:other:")}
    immediate = make(rp, mounts, max_store_size=50)
    rp.call(immediate.set("other", "o", "x" * 20, ttl=0.05))  # 22 bytes encoded
    rp.call(immediate.set("user", "a", 1, ttl=0.05))
    rp.call(immediate.set("user", "b", 1, ttl=0.05))
    time.sleep(0.15)
    kv = make(rp, mounts, max_store_size=50, write_policy="dispose")
    rp.call(kv.set("user", "c", "y" * 30))  # 32 bytes: fits only once "other" gives its 22 back
    rp.call(kv.set("user", "d", 1))  # fits: a and b gave their places back
    rp.call(kv.set("user", "e", 1))  # a third entry: refused
    with pytest.raises(QuotaExceeded) as err:
        rp.call(kv.flush())
    assert err.value.quota == "max_entries" and "'e'" in str(err.value)
    assert rp.call(immediate.keys("user")) == ["c", "d"]
    assert rp.call(immediate.keys("other")) == []
    c = rp.sync_client
    assert int(c.get(BASE + "u")) == 33 and int(c.get("app:other:{kv}:u")) == 0
    assert set(c.hkeys("app:other:{kv}:m")) <= {b""}  # at most the pad (see kv_set)
    assert c.zcount(BASE + "x", "-inf", "(inf") == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_flush_ends_where_the_same_writes_sent_one_by_one_end(rp: Harness, seed: int) -> None:
    """Quotas decided write by write, in order, across the mounts of a slot: the batch script
    refuses what the single-write script refuses, and leaves the same records and bookkeeping."""
    import random

    from redispatterns._core import kv as core

    rng = random.Random(seed)
    plan = []
    for _ in range(80):
        m, k = rng.choice("ab"), f"k{rng.randrange(12)}"
        value: Any = "x" * rng.choice([1, 50, 150])
        if rng.random() < 0.2:
            value = value.encode()  # stored behind the bytes mark, another content type
        plan.append((m, k, "delete" if rng.random() < 0.25 else "set", value, rng.choice([None, 60])))

    def kv_on(prefixes: str, **kw: Any) -> Any:
        mounts = {
            "a": rp_mount(f"app:{prefixes[0]}:", max_entries=6, ttl=30),
            "b": rp_mount(f"app:{prefixes[1]}:"),
        }
        return make(rp, mounts, max_store_size=700, **kw)

    def refusal(exc: Exception) -> tuple[str | None, str | None]:
        assert isinstance(exc, QuotaExceeded)
        return (exc.mount, exc.quota)

    one_by_one = kv_on("ab")
    expected_refusals = []
    for m, k, kind, value, ttl in plan:
        try:
            rp.call(one_by_one.set(m, k, value, ttl=ttl) if kind == "set" else one_by_one.delete(m, k))
        except QuotaExceeded as exc:
            expected_refusals.append(refusal(exc))
    batched = kv_on("cd", write_policy="dispose")
    refusals: list[tuple[str | None, str | None]] = []

    def flush() -> None:  # every refusal of the batch, not only the first flush() raises
        errors = rp.run(core.flush(batched._store, batched._buffer.drain()))
        refusals.extend(refusal(e) for e in errors)

    seen: set[tuple[str, str]] = set()
    for m, k, kind, value, ttl in plan:
        if (m, k) in seen:  # the buffer keeps one write per key: cut the batch where a key repeats
            flush()
            seen.clear()
        seen.add((m, k))
        rp.call(batched.set(m, k, value, ttl=ttl) if kind == "set" else batched.delete(m, k))
    flush()
    assert refusals == expected_refusals and {q for _, q in refusals} == {"max_entries", "max_store_size"}
    assert _state(rp, "app:c:") == _state(rp, "app:a:") and _state(rp, "app:d:") == _state(rp, "app:b:")


def _ttl_class(pttl: int) -> int:
    """30 or 60 (the TTLs the plan uses, however long the runs took), or PTTL's -1 / -2."""
    return pttl if pttl < 0 else 60 if pttl > 45_000 else 30


def _state(rp_: Harness, prefix: str) -> dict[str, Any]:
    """A mount's records and bookkeeping (TTLs as the 30 s or 60 s they were given)."""
    c = rp_.sync_client
    base = prefix + "{kv}:"
    idx = c.zrange(base + "i", 0, -1)
    meta = {k: re.split(rb"[:;]", v, maxsplit=2) for k, v in c.hgetall(base + "m").items() if k}
    return {
        "index": idx,
        "meta": {k: (size, ctype) for k, (size, _, ctype) in meta.items()},
        "expiring": sorted(c.zrangebyscore(base + "x", "-inf", "(inf")),  # not the pad (+inf)
        "used": int(c.get(base + "u") or 0),
        "records": {m: c.get(base + "k:" + m.decode()) for m in idx},
        "ttls": {m: _ttl_class(c.pttl(base + "k:" + m.decode())) for m in idx},
    }


def test_dispose_flushes_on_context_exit(rp: Harness) -> None:
    if rp.is_async:

        async def body() -> None:
            async with make(rp, write_policy="dispose") as kv:
                await kv.set("user", "k", 1)
                assert rp.sync_client.exists(BASE + "k:k") == 0

        rp.call(body())
    else:
        with make(rp, write_policy="dispose") as kv:
            kv.set("user", "k", 1)
            assert rp.sync_client.exists(BASE + "k:k") == 0
    assert rp.sync_client.get(BASE + "k:k") == b"1"


def test_mount_gives_a_bound_namespace(rp: Harness) -> None:
    kv = make(rp)
    ns = kv.mount("user")
    assert isinstance(ns, Namespace) and ns.asyncio == rp.is_async and ns.name == "user"
    assert resolve(ns, None, asyncio=rp.is_async) is ns
    assert ns.prefix == USER and ns.client is rp.client
    by_keyword = rp.pick(KV, AsyncKV)(mounts={"user": Mount(prefix=USER)}, client=rp.client)
    assert by_keyword.client is rp.client
    with pytest.raises(ValueError):
        rp.pick(KV, AsyncKV)("redis://x", {"user": Mount(prefix=USER)}, client=rp.client)
    with pytest.raises(TypeError):
        rp.pick(AsyncKV, KV)(rp.client, {"user": Mount(prefix=USER)})  # the other flavour
    with pytest.raises(KeyError):
        kv.mount("nope")


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="overlap"):
        KV(None, {"a": Mount(prefix="app:"), "b": Mount(prefix="app:b:")})
    with pytest.raises(ValueError):
        KV(None, {"a": Mount(prefix="app:{x:")})
    with pytest.raises(ValueError):
        KV(None, {"a": Mount(prefix="app:")}, write_policy="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        KV(None, {})
    with pytest.raises(TypeError):
        KV(None, {"a": "app:"})  # type: ignore[dict-item]
    kv = KV(None, {"a": Mount(prefix="app:")}, write_policy="immediate")
    with pytest.raises(ValueError):
        kv.set("a", "", 1)
    with pytest.raises(TypeError):
        kv.get("a", 1)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        kv.get("b", "k")


def _acl_servers(rp_: Harness) -> None:
    if rp_.backend.is_fake or rp_.backend.is_cluster:
        pytest.skip("ACL users are set per node: checked on the standalone servers")


def test_acl_user_limited_to_the_prefix_runs_every_function(rp: Harness) -> None:
    _acl_servers(rp)
    admin = rp.sync_client
    admin.execute_command("ACL", "SETUSER", "kvuser", "reset", "on", ">kvpass", "~app:user:*", "+@all")
    try:
        opts = {"username": "kvuser", "password": "kvpass"}
        if rp.is_async:
            client = rp.call_in_loop(lambda: rp.backend.async_client(**opts))
        else:
            client = rp.backend.sync_client(**opts)
        # a store-wide size limit counts every mount of the slot, so this store has none ...
        mounts = {"user": rp_mount(USER, ttl=60, max_entries=100), "other": rp_mount("app:other:")}
        kv = make(rp, mounts, client=client, write_policy="dispose", max_store_size=None)
        rp.call(kv.set("user", "a", {"x": 1}))
        rp.call(kv.merge("user", "a", {"y": 1}))
        rp.call(kv.merge("user", "b", {"y": 1}))
        rp.call(kv.flush())
        assert rp.call(kv.get("user", "a")) == {"x": 1, "y": 1}
        assert rp.call(kv.get_or("user", "zz", 0)) == 0
        assert rp.call(kv.has("user", "b")) is True
        assert rp.call(kv.keys("user")) == ["a", "b"]
        assert rp.call(kv.keys("user", start_after="a", limit=5)) == ["b"]
        assert rp.call(kv.get_all("user")) == {"a": {"x": 1, "y": 1}, "b": {"y": 1}}
        assert rp.call(kv.info("user", "a")).size > 0
        assert rp.call(kv.delete("user", "b")) is True
        assert rp.call(kv.clear("user")) is True
        assert kv.mounts() and kv.schema("user") == []
        with pytest.raises(redis.exceptions.NoPermissionError):  # the check can fail
            rp.call(kv.get("other", "a"))
        # ... while a store of this one mount keeps its limit under the same ACL
        alone = make(rp, {"user": rp_mount(USER)}, client=client, max_store_size=100)
        assert rp.call(alone.set("user", "k", "x" * 50)) is True
        with pytest.raises(QuotaExceeded):
            rp.call(alone.set("user", "k2", "x" * 50))
    finally:
        admin.execute_command("ACL", "DELUSER", "kvuser")


EXIT_SCRIPT = """
import asyncio, sys
from redispatterns import Mount
from redispatterns.kv import KV, AsyncKV
url = sys.argv[1]
mounts = {"user": Mount(prefix="app:user:")}
kv = KV(url, mounts, write_policy="dispose")  # nothing sent until exit
kv.set("user", "sync", 1)
akv = AsyncKV(url, mounts, write_policy="dispose")
asyncio.run(akv.set("user", "async", 2))
assert kv.pending == 1 and akv.pending == 1
"""


def test_buffered_writes_are_flushed_at_interpreter_exit(standalone_url: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, standalone_url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    c = redis.Redis.from_url(standalone_url)
    assert c.mget(BASE + "k:sync", BASE + "k:async") == [b"1", b"2"]
    c.close()


def test_the_default_policy_puts_every_acknowledged_write_on_the_server(rp: Harness) -> None:
    kv: Any = rp.pick(KV, AsyncKV)(rp.client, {"user": rp_mount(USER)})
    assert kv.write_policy == "immediate"
    assert rp.call(kv.set("user", "a", 1)) is True
    assert kv.pending == 0
    assert rp.backend.sync_client().get(BASE + "k:a") == b"1"  # seen by anyone, at once


def test_a_dropped_dispose_kv_flushes_its_buffer_with_a_resource_warning(standalone_url: str) -> None:
    kv = KV(standalone_url, {"user": rp_mount(USER)}, write_policy="dispose")
    for i in range(50):
        kv.set("user", f"d{i}", i)
    assert kv.pending == 50
    with pytest.warns(ResourceWarning, match="50 buffered writes: flushed them now"):
        del kv  # collected right here: nothing else refers to it
    c = redis.Redis.from_url(standalone_url)
    assert c.mget([f"{BASE}k:d{i}" for i in range(50)]) == [str(i).encode() for i in range(50)]
    c.close()


def test_threads_share_one_dispose_buffer(rp: Harness) -> None:
    kv = make(rp, write_policy="dispose")
    calls = [lambda i=i: kv.merge("user", "doc", {f"f{i}": i}) for i in range(40)]
    calls += [lambda i=i: kv.set("user", f"k{i}", i) for i in range(40)]
    assert all(r is True for r in run_many(rp, calls))
    assert rp.call(kv.flush()) == 41
    assert rp.call(kv.get("user", "doc")) == {f"f{i}": i for i in range(40)}
    assert len(rp.call(kv.keys("user"))) == 41
