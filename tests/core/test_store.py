"""The key-value store core without a server: identity, content types, flows (replayed)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from redispatterns import DecodeError, StoreNotFound
from redispatterns._core import store as core
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import Command, Script
from redispatterns.testing.replay import ReplayMismatch, replay, trace

KEYS = core.StoreKeys.of(Keyspace("app:"), "s1")


def script(name: str, keys: tuple[Any, ...] | None = None, args: tuple[Any, ...] | None = None) -> Any:
    def match(op: Any) -> bool:
        return (
            isinstance(op, Script)
            and op.script.name == name
            and (keys is None or op.keys == keys)
            and (args is None or op.args == args)
        )

    return match


def test_layout_is_one_slot_per_store() -> None:
    assert KEYS.all == (
        "app:kvs:{s1}:items",
        "app:kvs:{s1}:records",
        "app:kvs:{s1}:index",
        "app:kvs:{s1}:meta",
    )
    assert len({slot(k) for k in KEYS.all}) == 1
    assert KEYS.wire == tuple(k.encode() for k in KEYS.all)  # the scripts' keys: prebuilt bytes
    braces = core.StoreKeys.of(Keyspace("app:"), "a{b}c")
    assert len({slot(k) for k in braces.all}) == 1 and "{b}" not in braces.items


def test_identity_from_id_name_or_alias() -> None:
    assert core.identity("x", None, None) == ("x", "", "")
    nid, name, alias = core.identity(None, "orders", None)
    assert (name, alias) == ("orders", "") and nid.startswith("n") and len(nid) == 25
    assert core.identity(None, "orders", None)[0] == nid  # stable: the name is the identity
    aid = core.identity(None, None, "orders")[0]
    assert aid.startswith("a") and aid != nid
    assert core.identity(None, None, None) == (core.identity(None, None, "default")[0], "", "default")
    with pytest.raises(ValueError, match="id= and name="):
        core.identity("x", "y", None)
    with pytest.raises(ValueError, match="name= and alias="):
        core.identity(None, "y", "z")
    with pytest.raises(TypeError):
        core.identity(None, b"y", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        core.identity(None, None, "")
    with pytest.raises(ValueError, match="at most"):
        core.identity("x" * 300, None, None)


@pytest.mark.parametrize(
    ("value", "declared", "payload", "stored_type"),
    [
        ({"a": 1}, None, b'{"a":1}', core.JSON),
        ([1, "x"], None, b'[1,"x"]', core.JSON),
        (None, None, b"null", core.JSON),
        ("héllo", None, "héllo".encode(), core.TEXT),
        (b"\x00\xff", None, b"\x00\xff", core.OCTETS),
        (bytearray(b"ab"), None, b"ab", core.OCTETS),
        (b"\x89PNG", "image/png", b"\x89PNG", "image/png"),
        ("a,b", "text/csv", b"a,b", "text/csv"),
        ("<x/>", "application/xml; charset=utf-8", b"<x/>", "application/xml; charset=utf-8"),
        ("hi", "application/json", b'"hi"', "application/json"),
        (b'{"a":1}', "application/json", b'{"a":1}', "application/json"),
        ("raw", "application/x-thing", b"raw", "application/x-thing"),
    ],
)
def test_content_types_round_trip(value: Any, declared: str | None, payload: bytes, stored_type: str) -> None:
    assert core.encode(value, declared) == (payload, stored_type)
    back = core.decode(payload, stored_type)
    if isinstance(value, (bytes, bytearray)) and "json" not in stored_type:
        assert back == bytes(value)
    elif stored_type == "application/x-thing":
        assert back == b"raw"  # neither JSON nor text: bytes
    elif isinstance(value, bytes):
        assert back == {"a": 1}
    else:
        assert back == value
    # a client with decode_responses=True replies str: the same value comes back
    assert core.decode(payload.decode("utf-8", "surrogateescape"), stored_type) == back


def test_content_type_errors_are_actionable() -> None:
    with pytest.raises(TypeError, match="must be str or bytes"):
        core.encode({"a": 1}, "text/plain")
    with pytest.raises(TypeError, match="as JSON"):
        core.encode({1, 2}, None)
    with pytest.raises(ValueError, match="not valid JSON"):
        core.encode(b"{nope", "application/json")
    with pytest.raises(TypeError, match="content_type must be a str"):
        core.encode("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MIME type"):
        core.encode("x", "text/plain\r\nX: y")
    with pytest.raises(ValueError, match="MIME type"):
        core.encode("x", "")
    with pytest.raises(DecodeError):
        core.decode(b"{nope", core.JSON)


def test_open_creates_and_parses_metadata() -> None:
    flat = [b"id", b"s1", b"name", b"orders", b"alias", b"", b"created_at", b"1700000000000001",
            b"modified_at", b"1700000000500000", b"accessed_at", b"1700000001000000",
            b"item_count", b"3", b"size", b"42"]  # fmt: skip
    created, meta = replay(
        core.open_store(KEYS, "s1", "orders", ""),
        [(script("store_open", (KEYS.meta,), ("s1", "orders", "")), [1, flat])],
    )
    assert created is True
    assert meta == core.KeyValueStoreMetadata(
        id="s1",
        name="orders",
        alias=None,
        created_at=datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=timezone.utc),
        modified_at=datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=timezone.utc),
        accessed_at=datetime(2023, 11, 14, 22, 13, 21, tzinfo=timezone.utc),
        item_count=3,
        size=42,
    )
    # HGETALL through redis-py is a dict (decoded or not)
    d = {"id": "s1", "name": "", "alias": "tmp", "created_at": "0", "item_count": "0", "size": "0"}
    got = replay(core.get_metadata(KEYS, "s1"), [(Command("HGETALL", KEYS.meta), d)])
    assert got.alias == "tmp" and got.name is None and got.created_at.timestamp() == 0
    with pytest.raises(StoreNotFound, match="does not exist"):
        replay(core.get_metadata(KEYS, "s1"), [(Command("HGETALL", KEYS.meta), {})])
    found = replay(core.find_store(KEYS, "s1"), [(Command("HGETALL", KEYS.meta), d)])
    assert found == (False, got)


def test_writes_check_the_store_exists() -> None:
    ok = replay(
        core.set_value(KEYS, "s1", "k", b"v", core.TEXT),
        [(script("store_set", KEYS.wire, ("k", b"tv", core.TEXT, 1)), 1)],
    )
    assert ok is True
    assert replay(core.set_value(KEYS, "s1", "k", b"v", core.TEXT), [(script("store_set"), 0)]) is False
    deleted = replay(core.delete_value(KEYS, "s1", "k"), [(script("store_delete", KEYS.wire, ("k",)), 1)])
    assert deleted is True
    assert replay(core.delete_value(KEYS, "s1", "k"), [(script("store_delete"), 0)]) is False
    assert replay(core.purge(KEYS, "s1"), [(script("store_purge", KEYS.wire), 7)]) == 7
    assert replay(core.drop(KEYS), [(script("store_drop", KEYS.wire), 1)]) is True
    for flow in (
        core.set_value(KEYS, "s1", "k", b"v", core.TEXT),
        core.delete_value(KEYS, "s1", "k"),
        core.purge(KEYS, "s1"),
    ):
        with pytest.raises(StoreNotFound):
            replay(flow, [(Script, -1)])


def test_reads_are_one_hget() -> None:
    hget = Command("HGET", KEYS.items, "k")
    assert replay(core.get_record(KEYS, "k"), [(hget, b'j{"a":1}')]) == core.KeyValueStoreRecord(
        "k", {"a": 1}, core.JSON, 7
    )
    text = replay(core.get_record(KEYS, "k"), [(hget, "thé")])  # decoded replies too
    assert text is not None and text.value == "hé"
    raw = replay(core.get_record(KEYS, "k"), [(hget, b"b\x00")])
    assert raw is not None and raw.value == b"\x00"
    png = replay(core.get_record(KEYS, "k"), [(hget, b"cimage/png\n\x89PNG\n")])
    assert png == core.KeyValueStoreRecord("k", b"\x89PNG\n", "image/png", 5)
    assert replay(core.get_record(KEYS, "k"), [(hget, None)]) is None
    for foreign in (b"", b"x", b"cno-newline"):
        with pytest.raises(DecodeError, match="not written by KeyValueStore"):
            replay(core.get_record(KEYS, "k"), [(hget, foreign)])
    assert replay(core.record_exists(KEYS, "k"), [(Command("HEXISTS", KEYS.items, "k"), 1)]) is True
    assert replay(core.record_exists(KEYS, "k"), [(Command("HEXISTS", KEYS.items, "k"), 0)]) is False


def test_stored_marks_round_trip() -> None:
    for ct in (core.JSON, core.TEXT, core.OCTETS, "image/png", "application/json"):
        assert core.unpack(core.stored(b"\npay:load", ct)) == (b"\npay:load", ct)
    assert core.stored(b"x", core.JSON) == b"jx" and core.stored(b"x", "a/b") == b"ca/b\nx"


def test_key_pages() -> None:
    first = replay(
        core.keys_page(KEYS, None, 2),
        [
            (
                script("store_keys", (KEYS.index, KEYS.records), ("", 2, 0)),
                [b"a", b"3:text/csv", "b", "10:x/y:z"],
            )
        ],
    )
    assert first == [
        core.KeyValueStoreRecordMetadata("a", "text/csv", 3),
        core.KeyValueStoreRecordMetadata("b", "x/y:z", 10),
    ]
    assert replay(core.keys_page(KEYS, "b", 5), [(script("store_keys", args=("b", 5, 1)), [])]) == []
    with pytest.raises(ReplayMismatch):
        replay(core.keys_page(KEYS, "b", 5), [(script("store_keys", args=("", 5, 0)), [])])


def _metas(*names: str) -> list[core.KeyValueStoreRecordMetadata]:
    return [core.KeyValueStoreRecordMetadata(n, core.TEXT, 1) for n in names]


def test_pager_asks_page_by_page_and_stops() -> None:
    pager = core.KeyPager(KEYS, "a", 5, 2)
    asked = []
    pages = iter([["b", "c"], ["d", "e"], ["f"]])
    while (flow := pager.flow()) is not None:
        ops, page = trace(flow, lambda op: [x for n in next(pages) for x in (n, b"1:" + core.TEXT.encode())])
        asked.append(ops[0].args)  # type: ignore[union-attr]
        pager.took(page)
    assert asked == [("a", 2, 1), ("c", 2, 1), ("e", 1, 1)]  # the last page asks only for what is left
    short = core.KeyPager(KEYS, None, None, 2)
    assert short.took(_metas("x")) == _metas("x") and short.flow() is None  # a short page ends it
    empty = core.KeyPager(KEYS, None, None, 2)
    empty.took([])
    assert empty.flow() is None
    assert core.KeyPager(KEYS, None, 0, 2).flow() is None
    full = core.KeyPager(KEYS, None, None, 2)
    full.took(_metas("x", "y"))
    assert full.flow() is not None
