"""Key-value stores with identity (seed S1): ``KeyValueStore`` and ``AsyncKeyValueStore``.

>>> store = KeyValueStore.open(name="crawl-results")                        # doctest: +SKIP
>>> store.set_value("page-1", {"title": "Home"})                            # doctest: +SKIP
>>> store.get_value("page-1"), store.get_metadata().item_count              # doctest: +SKIP
({'title': 'Home'}, 1)

A store is opened by ``id``, by ``name`` (global) or by ``alias`` (an unnamed store, e.g. one
run's scratch space), and created when absent, atomically: concurrent openers of one name get
one store. Its metadata (item count, size, created/modified/accessed times) is kept by the same
Lua script as each write. The logic lives in :mod:`redispatterns._core.store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._core import store as core
from ._core.mount import Mount
from ._core.ops import Flow
from ._core.store import KeyValueStoreMetadata, KeyValueStoreRecord, KeyValueStoreRecordMetadata
from ._runner import run_async, run_sync
from .errors import StoreNotFound
from .mount import Namespace, resolve

__all__ = [
    "AsyncKeyValueStore",
    "KeyValueStore",
    "KeyValueStoreRecord",
    "KeyValueStoreRecordMetadata",
    "KeyValueStoreMetadata",
    "StoreNotFound",
]

PAGE = 1000  # records per round trip when iterating keys


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a record key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("a record key cannot be empty")
    return key


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit


def _check_start(key: object) -> str | None:
    return None if key is None else _check_key(key)


class _Store:
    """Identity, validation and flow building shared by both flavours."""

    _asyncio = False

    def __init__(self, ns: Namespace, store_id: str, metadata: KeyValueStoreMetadata) -> None:
        """Use :meth:`open`."""
        self._ns = ns
        self._id = store_id
        self._keys = core.StoreKeys.of(ns.keyspace, store_id)
        self._name = metadata.name
        self._alias = metadata.alias
        self.created = False

    @classmethod
    def _prepare(
        cls, id: str | None, name: str | None, alias: str | None, client: Any, mount: Mount | Namespace | None
    ) -> tuple[Namespace, str, Flow[tuple[bool, KeyValueStoreMetadata]]]:
        ns = resolve(mount, client, asyncio=cls._asyncio)
        store_id, n, a = core.identity(id, name, alias)
        keys = core.StoreKeys.of(ns.keyspace, store_id)
        if not ns.mount.can_write:  # a read mount finds a store, never creates one
            return ns, store_id, core.find_store(keys, store_id)
        return ns, store_id, core.open_store(keys, store_id, n, a)

    @property
    def id(self) -> str:
        """The store id (derived from the name or alias when opened by one)."""
        return self._id

    @property
    def name(self) -> str | None:
        """The name of a named (global) store, else ``None``."""
        return self._name

    @property
    def alias(self) -> str | None:
        """The alias of an unnamed store opened by alias, else ``None``."""
        return self._alias

    @property
    def client(self) -> Any:
        return self._ns.client

    def __repr__(self) -> str:
        label = f"name={self._name!r}" if self._name else f"alias={self._alias!r}" if self._alias else ""
        return f"<{type(self).__name__} id={self._id!r} {label}>".replace(" >", ">")

    # flows -----------------------------------------------------------------

    def _get(self, key: str) -> Flow[KeyValueStoreRecord | None]:
        self._ns.check_read("read a record")
        return core.get_record(self._keys, _check_key(key))

    def _exists(self, key: str) -> Flow[bool]:
        self._ns.check_read("check a record")
        return core.record_exists(self._keys, _check_key(key))

    def _set(self, key: str, value: Any, content_type: str | None) -> Flow[bool]:
        self._ns.check_write("write a record")
        payload, ct = core.encode(value, content_type)
        return core.set_value(self._keys, self._id, _check_key(key), payload, ct)

    def _delete(self, key: str) -> Flow[bool]:
        self._ns.check_write("delete a record")
        return core.delete_value(self._keys, self._id, _check_key(key))

    def _iterate(self, exclusive_start_key: str | None, limit: int | None) -> core.KeyPager:
        self._ns.check_read("list records")
        return core.KeyPager(self._keys, _check_start(exclusive_start_key), _check_limit(limit), PAGE)

    def _meta(self) -> Flow[KeyValueStoreMetadata]:
        self._ns.check_read("read store metadata")
        return core.get_metadata(self._keys, self._id)

    def _purge(self) -> Flow[int]:
        self._ns.check_write("purge a store")
        return core.purge(self._keys, self._id)

    def _drop(self) -> Flow[bool]:
        self._ns.check_write("drop a store")
        return core.drop(self._keys)


class KeyValueStore(_Store):
    """A key-value store with identity and metadata (sync). Open it with :meth:`open`."""

    @classmethod
    def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        client: Any = None,
        mount: Mount | Namespace | None = None,
    ) -> KeyValueStore:
        """Open the store with this ``id``, ``name`` or ``alias`` (at most one), creating it
        when absent; none opens the default unnamed store (alias ``"default"``). One round trip.
        On a ``"read"`` mount it only finds the store (:class:`StoreNotFound` when absent).
        """
        ns, store_id, flow = cls._prepare(id, name, alias, client, mount)
        created, metadata = run_sync(ns.client, flow)
        store = cls(ns, store_id, metadata)
        store.created = created
        return store

    def get_value(self, key: str, default: Any = None) -> Any:
        """The record's value (JSON value, ``str`` or ``bytes`` by content type), or ``default``."""
        record = run_sync(self._ns.client, self._get(key))
        return default if record is None else record.value

    def get_record(self, key: str) -> KeyValueStoreRecord | None:
        """The record with its value, content type and size, or ``None``."""
        return run_sync(self._ns.client, self._get(key))

    def set_value(self, key: str, value: Any, content_type: str | None = None) -> bool:
        """Store ``value`` under ``key`` (type detected unless given): True when the key is new.
        Raises :class:`StoreNotFound` when the store was dropped."""
        return run_sync(self._ns.client, self._set(key, value, content_type))

    def delete_value(self, key: str) -> bool:
        """Delete the record: True when it existed."""
        return run_sync(self._ns.client, self._delete(key))

    def record_exists(self, key: str) -> bool:
        """True when the store holds ``key``."""
        return run_sync(self._ns.client, self._exists(key))

    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> Iterator[KeyValueStoreRecordMetadata]:
        """Every record's metadata in key order, after ``exclusive_start_key``, at most ``limit``
        (pages of 1000 records per round trip)."""
        return self._pages(self._iterate(exclusive_start_key, limit))

    def _pages(self, pager: core.KeyPager) -> Iterator[KeyValueStoreRecordMetadata]:
        while (flow := pager.flow()) is not None:
            yield from pager.took(run_sync(self._ns.client, flow))

    def get_metadata(self) -> KeyValueStoreMetadata:
        """The store's metadata (:class:`StoreNotFound` once dropped)."""
        return run_sync(self._ns.client, self._meta())

    def purge(self) -> int:
        """Remove every record and keep the store: the number removed."""
        return run_sync(self._ns.client, self._purge())

    def drop(self) -> bool:
        """Remove the store and its metadata: True when it existed."""
        return run_sync(self._ns.client, self._drop())


class AsyncKeyValueStore(_Store):
    """The asyncio twin of :class:`KeyValueStore`: ``store = await AsyncKeyValueStore.open(...)``."""

    _asyncio = True

    @classmethod
    async def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        alias: str | None = None,
        client: Any = None,
        mount: Mount | Namespace | None = None,
    ) -> AsyncKeyValueStore:
        """See :meth:`KeyValueStore.open`."""
        ns, store_id, flow = cls._prepare(id, name, alias, client, mount)
        created, metadata = await run_async(ns.client, flow)
        store = cls(ns, store_id, metadata)
        store.created = created
        return store

    async def get_value(self, key: str, default: Any = None) -> Any:
        record = await run_async(self._ns.client, self._get(key))
        return default if record is None else record.value

    async def get_record(self, key: str) -> KeyValueStoreRecord | None:
        return await run_async(self._ns.client, self._get(key))

    async def set_value(self, key: str, value: Any, content_type: str | None = None) -> bool:
        return await run_async(self._ns.client, self._set(key, value, content_type))

    async def delete_value(self, key: str) -> bool:
        return await run_async(self._ns.client, self._delete(key))

    async def record_exists(self, key: str) -> bool:
        return await run_async(self._ns.client, self._exists(key))

    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        return self._pages(self._iterate(exclusive_start_key, limit))

    async def _pages(self, pager: core.KeyPager) -> AsyncIterator[KeyValueStoreRecordMetadata]:
        while (flow := pager.flow()) is not None:
            for record in pager.took(await run_async(self._ns.client, flow)):
                yield record

    async def get_metadata(self) -> KeyValueStoreMetadata:
        return await run_async(self._ns.client, self._meta())

    async def purge(self) -> int:
        return await run_async(self._ns.client, self._purge())

    async def drop(self) -> bool:
        return await run_async(self._ns.client, self._drop())
