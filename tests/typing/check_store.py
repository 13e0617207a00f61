"""User code around key-value stores that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from typing_extensions import assert_type

import redispatterns as rp


def use() -> None:
    store = rp.KeyValueStore.open(name="crawl")
    assert_type(store, rp.KeyValueStore)
    assert_type(store.created, bool)
    assert_type(store.set_value("page", {"title": "Home"}), bool)
    assert_type(store.get_value("page"), Any)
    record = store.get_record("page")
    assert_type(record, rp.KeyValueStoreRecord | None)
    keys = store.iterate_keys(limit=10)
    assert_type(keys, Iterator[rp.KeyValueStoreRecordMetadata])
    meta = store.get_metadata()
    assert_type(meta, rp.KeyValueStoreMetadata)
    assert_type(meta.created_at, datetime)
    assert_type(meta.item_count, int)
    assert_type(store.purge(), int)
    assert_type(store.drop(), bool)


async def use_async() -> None:
    store = await rp.AsyncKeyValueStore.open(alias="run-42")
    assert_type(store, rp.AsyncKeyValueStore)
    assert_type(await store.get_record("page"), rp.KeyValueStoreRecord | None)
    assert_type(store.iterate_keys(), AsyncIterator[rp.KeyValueStoreRecordMetadata])
    async for meta in store.iterate_keys():
        assert_type(meta.size, int)
