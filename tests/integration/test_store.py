"""Key-value stores with identity (S1) on every backend and flavour: open, records, metadata, drop."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from redispatterns import (
    AsyncKeyValueStore,
    KeyValueStore,
    KeyValueStoreRecord,
    KeyValueStoreRecordMetadata,
    Mount,
    StoreNotFound,
)
from redispatterns.mount import Namespace
from redispatterns.testing.plugin import Harness


def open_(rp_: Harness, **kw: Any) -> Any:
    cls: Any = rp_.pick(KeyValueStore, AsyncKeyValueStore)
    kw.setdefault("client", rp_.client)
    return rp_.call(cls.open(**kw))


def keys_of(rp_: Harness, store: Any, **kw: Any) -> list[Any]:
    it = store.iterate_keys(**kw)
    if rp_.is_async:

        async def collect() -> list[Any]:
            return [m async for m in it]

        return list(rp_.call(collect()))
    return list(it)


def raw_keys(rp_: Harness) -> set[bytes]:
    c = rp_.sync_client
    if rp_.backend.is_cluster:
        return set(c.keys(target_nodes="primaries"))
    return set(c.keys())


def test_open_by_name_creates_once_then_finds_it(rp: Harness) -> None:
    before = datetime.now(timezone.utc).timestamp()
    a = open_(rp, name="results")
    assert a.created is True and a.name == "results" and a.alias is None
    meta = rp.call(a.get_metadata())
    assert meta.id == a.id and meta.name == "results" and meta.alias is None
    assert meta.item_count == 0 and meta.size == 0
    assert abs(meta.created_at.timestamp() - before) < 60 and meta.created_at.tzinfo is not None
    b = open_(rp, name="results")
    assert b.created is False and b.id == a.id
    by_id = open_(rp, id=a.id)
    assert by_id.created is False and by_id.name == "results"
    other = open_(rp, name="other")
    assert other.id != a.id
    aliased = open_(rp, alias="results")  # aliases and names are separate spaces
    assert aliased.id != a.id and aliased.name is None and aliased.alias == "results"
    default = open_(rp)
    assert default.alias == "default" and open_(rp, alias="default").id == default.id
    fresh = open_(rp, id="my-id")
    assert fresh.created is True and fresh.id == "my-id" and fresh.name is None


def test_records_metadata_and_content_types(rp: Harness) -> None:
    store = open_(rp, name="crawl")
    t0 = rp.call(store.get_metadata())
    assert rp.call(store.set_value("json", {"a": [1, 2]})) is True
    assert rp.call(store.set_value("text", "héllo")) is True
    assert rp.call(store.set_value("bytes", b"\x00\xff")) is True
    assert rp.call(store.set_value("png", b"\x89PNG", content_type="image/png")) is True
    assert rp.call(store.set_value("csv", "a,b\n1,2", content_type="text/csv")) is True
    assert rp.call(store.set_value("num", 7)) is True
    assert rp.call(store.get_value("json")) == {"a": [1, 2]}
    assert rp.call(store.get_value("text")) == "héllo"
    assert rp.call(store.get_value("bytes")) == b"\x00\xff"
    assert rp.call(store.get_value("png")) == b"\x89PNG"
    assert rp.call(store.get_value("csv")) == "a,b\n1,2"
    assert rp.call(store.get_value("num")) == 7
    assert rp.call(store.get_value("missing")) is None
    assert rp.call(store.get_value("missing", "dflt")) == "dflt"
    rec = rp.call(store.get_record("text"))
    assert rec == KeyValueStoreRecord("text", "héllo", "text/plain; charset=utf-8", len("héllo".encode()))
    assert rp.call(store.get_record("missing")) is None
    metas = keys_of(rp, store)
    assert [m.key for m in metas] == ["bytes", "csv", "json", "num", "png", "text"]
    assert metas[0] == KeyValueStoreRecordMetadata("bytes", "application/octet-stream", 2)
    assert metas[2] == KeyValueStoreRecordMetadata(
        "json", "application/json; charset=utf-8", len(b'{"a":[1,2]}')
    )
    assert metas[4].content_type == "image/png"
    meta = rp.call(store.get_metadata())
    assert meta.item_count == 6
    assert meta.size == sum(m.size for m in metas)
    assert meta.modified_at >= t0.modified_at and meta.created_at == t0.created_at
    # overwrite: the count stays, the size follows
    assert rp.call(store.set_value("text", "hi")) is False
    meta2 = rp.call(store.get_metadata())
    assert meta2.item_count == 6 and meta2.size == meta.size - len("héllo".encode()) + 2
    assert rp.call(store.record_exists("text")) is True
    assert rp.call(store.delete_value("text")) is True
    assert rp.call(store.delete_value("text")) is False
    assert rp.call(store.record_exists("text")) is False
    meta3 = rp.call(store.get_metadata())
    assert meta3.item_count == 5 and meta3.size == meta2.size - 2


def test_iterate_keys_pages_after_an_exclusive_start(rp: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import redispatterns.store as shell

    monkeypatch.setattr(shell, "PAGE", 3)  # several round trips for 10 records
    store = open_(rp, alias="pages")
    names = [f"k{i:02}" for i in range(10)]
    for n in reversed(names):
        rp.call(store.set_value(n, n))
    assert [m.key for m in keys_of(rp, store)] == names
    assert [m.key for m in keys_of(rp, store, exclusive_start_key="k03")] == names[4:]
    assert [m.key for m in keys_of(rp, store, exclusive_start_key="k03", limit=4)] == names[4:8]
    assert [m.key for m in keys_of(rp, store, limit=3)] == names[:3]
    assert keys_of(rp, store, limit=0) == []
    assert keys_of(rp, store, exclusive_start_key="k09") == []
    assert [m.key for m in keys_of(rp, store, exclusive_start_key="a")] == names  # need not exist


def test_purge_keeps_the_store_and_drop_removes_it(rp: Harness) -> None:
    store = open_(rp, name="tmp")
    keep = open_(rp, name="keep")
    rp.call(keep.set_value("x", 1))
    for i in range(5):
        rp.call(store.set_value(f"k{i}", i))
    assert rp.call(store.purge()) == 5
    meta = rp.call(store.get_metadata())
    assert meta.item_count == 0 and meta.size == 0
    assert keys_of(rp, store) == []
    assert rp.call(store.set_value("again", 1)) is True
    assert rp.call(store.drop()) is True
    assert rp.call(store.drop()) is False
    with pytest.raises(StoreNotFound) as err:
        rp.call(store.get_metadata())
    assert err.value.store_id == store.id
    with pytest.raises(StoreNotFound):
        rp.call(store.set_value("late", 1))  # a write to a dropped store changes nothing
    with pytest.raises(StoreNotFound):
        rp.call(store.set_value("again", 2))  # nor does an overwrite of a record it held
    with pytest.raises(StoreNotFound):
        rp.call(store.delete_value("again"))
    with pytest.raises(StoreNotFound):
        rp.call(store.purge())
    assert rp.call(store.get_value("again")) is None
    reopened = open_(rp, name="tmp")
    assert reopened.created is True and reopened.id == store.id
    assert rp.call(reopened.get_metadata()).item_count == 0
    assert rp.call(keep.get_value("x")) == 1  # the other store is untouched
    rp.call(reopened.drop())
    rp.call(keep.drop())
    assert raw_keys(rp) == set()


def test_the_records_hashes_keep_the_hashtable_encoding_from_the_first_record(rp: Harness) -> None:
    """A pad entry over 64 bytes (under the empty name, which no record key has) keeps the items
    and records hashes out of the listpack encoding, scanned on every write; it never shows."""
    if rp.backend.is_fake:
        pytest.skip("fakeredis has no encodings")
    store = open_(rp, name="padded")
    for i in range(3):
        rp.call(store.set_value(f"k{i}", i))
    rp.call(store.set_value("k0", 10))  # an overwrite of another size
    c = rp.sync_client
    keys = store._keys
    assert [c.object("encoding", k) for k in (keys.items, keys.records)] == [b"hashtable"] * 2
    meta = rp.call(store.get_metadata())
    assert meta.item_count == 3 and meta.size == len(b"10") + 2
    assert [r.key for r in keys_of(rp, store)] == ["k0", "k1", "k2"]
    assert rp.call(store.delete_value("k0")) is True and rp.call(store.get_metadata()).item_count == 2
    rp.call(store.drop())
    assert raw_keys(rp) == set()


def test_concurrent_openers_of_one_name_create_one_store(rp: Harness) -> None:
    n = 16
    if rp.is_async:

        async def main() -> list[Any]:
            return list(
                await asyncio.gather(
                    *(AsyncKeyValueStore.open(name="race", client=rp.client) for _ in range(n))
                )
            )

        stores = rp.call(main())
    else:
        barrier = threading.Barrier(n)
        stores = [None] * n

        def one(i: int) -> None:
            barrier.wait()
            stores[i] = KeyValueStore.open(name="race", client=rp.client)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(1 for s in stores if s.created) == 1
    assert len({s.id for s in stores}) == 1
    meta = rp.call(stores[0].get_metadata())
    assert meta.name == "race" and meta.item_count == 0


def test_concurrent_writers_keep_the_metadata_exact(rp: Harness) -> None:
    store = open_(rp, name="counted")
    n = 40
    if rp.is_async:

        async def main() -> None:
            await asyncio.gather(*(store.set_value(f"k{i % 20}", "x" * (i % 7)) for i in range(n)))
            await asyncio.gather(*(store.delete_value(f"k{i}") for i in range(0, 20, 3)))

        rp.call(main())
    else:
        threads = [
            threading.Thread(target=store.set_value, args=(f"k{i % 20}", "x" * (i % 7))) for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dels = [threading.Thread(target=store.delete_value, args=(f"k{i}",)) for i in range(0, 20, 3)]
        for t in dels:
            t.start()
        for t in dels:
            t.join()
    metas = keys_of(rp, store)
    meta = rp.call(store.get_metadata())
    assert meta.item_count == len(metas) == 20 - len(range(0, 20, 3))
    assert meta.size == sum(m.size for m in metas)


def test_bad_arguments_are_refused_before_any_io(rp: Harness) -> None:
    cls: Any = rp.pick(KeyValueStore, AsyncKeyValueStore)
    with pytest.raises(ValueError, match="one of id=, name= or alias="):
        rp.call(cls.open(name="a", alias="b", client=rp.client))
    with pytest.raises(TypeError):
        rp.call(cls.open(name=3, client=rp.client))
    with pytest.raises(ValueError):
        rp.call(cls.open(id="", client=rp.client))
    store = open_(rp, name="v")
    with pytest.raises(TypeError):
        rp.call(store.set_value(1, "x"))
    with pytest.raises(ValueError):
        rp.call(store.get_value(""))
    with pytest.raises(TypeError, match="must be str or bytes"):
        rp.call(store.set_value("k", {"a": 1}, content_type="text/plain"))
    with pytest.raises(ValueError, match="not valid JSON"):
        rp.call(store.set_value("k", b"{nope", content_type="application/json"))
    with pytest.raises(TypeError, match="as JSON"):
        rp.call(store.set_value("k", object()))
    with pytest.raises(ValueError):
        store.iterate_keys(limit=-1)
    with pytest.raises(TypeError):
        store.iterate_keys(exclusive_start_key=5)
    assert rp.call(store.get_metadata()).item_count == 0


def test_read_only_mount_refuses_writes(rp: Harness) -> None:
    writer = open_(rp, name="shared", mount=Mount(prefix="app:"))
    rp.call(writer.set_value("k", 1))
    ro = Namespace(Mount(mode="read", prefix="app:"), rp.client)
    cls: Any = rp.pick(KeyValueStore, AsyncKeyValueStore)
    reader = rp.call(cls.open(name="shared", mount=ro))
    assert rp.call(reader.get_value("k")) == 1
    with pytest.raises(PermissionError):
        rp.call(reader.set_value("k", 2))
    with pytest.raises(PermissionError):
        rp.call(reader.drop())
    with pytest.raises(StoreNotFound):  # a read mount finds stores, it never creates one
        rp.call(cls.open(name="absent", mount=ro))
    writer_only = Namespace(Mount(mode="write", prefix="app:"), rp.client)
    blind = rp.call(cls.open(name="shared", mount=writer_only))
    rp.call(blind.set_value("k2", 2))
    with pytest.raises(PermissionError):
        rp.call(blind.get_value("k2"))
    assert rp.call(reader.get_value("k2")) == 2
    assert all(k.startswith(b"app:kvs:{") for k in raw_keys(rp))


def test_times_come_from_the_server_and_move_forward(rp: Harness) -> None:
    store = open_(rp, name="clock")
    m0 = rp.call(store.get_metadata())
    time.sleep(0.01)
    rp.call(store.set_value("k", 1))
    m1 = rp.call(store.get_metadata())
    assert m1.modified_at > m0.modified_at and m1.accessed_at >= m1.modified_at
    time.sleep(0.01)
    again = open_(rp, name="clock")
    m2 = rp.call(again.get_metadata())
    assert m2.accessed_at > m1.accessed_at and m2.modified_at == m1.modified_at


def _open_in_process(url: str, n: int, q: Any) -> None:
    from redispatterns.client import connect

    s = KeyValueStore.open(name="procs", client=connect(url))  # redis+cluster:// for a cluster
    s.set_value(f"from-{n}", n)
    q.put((s.id, s.created))


def test_processes_opening_one_name_create_one_store(backend: Any) -> None:
    import multiprocessing

    if backend.is_fake or not backend.url:
        pytest.skip("processes need a real server")
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_open_in_process, args=(backend.url, i, q)) for i in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert len({r[0] for r in results}) == 1 and sum(r[1] for r in results) == 1
    store = KeyValueStore.open(name="procs", client=backend.sync_client())
    assert store.get_metadata().item_count == 4
