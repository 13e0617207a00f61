"""The kv mount facade: ``KV`` / ``AsyncKV``, eleven functions over named mounts.

>>> kv = rp.KV("redis://localhost:6379/0", mounts={"user": rp.Mount("read-write", "app:user:")})
>>> kv.set("user", "name", "Ada"); kv.get("user", "name")
'Ada'

Quotas (``max_entries``, ``max_value_size`` per mount, ``max_store_size`` for the store), the
mount's TTL and the bookkeeping are applied by one Lua script per write. ``near=True`` keeps a
process-local copy of what ``get`` / ``get_or`` / ``has`` read, kept coherent by the server
(:mod:`redispatterns._kv_near`). See the README's "KV mounts" section and :mod:`redispatterns._core.kv`.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ._core import kv as core
from ._core.kv import KVInfo, MergeConflict, SchemaTypeError, WritePolicy
from ._core.mount import Mount
from ._core.near import NearStats
from ._kv_near import KVNear, after_writes, near_entries
from ._runner import run_async, run_sync
from .client import check_client, connect, connect_async
from .mount import Namespace

__all__ = ["KV", "AsyncKV", "KVInfo", "MergeConflict", "SchemaTypeError", "WritePolicy"]

_MAX_STORE = 10485760


class _Base:
    """What both flavours share: configuration, the write buffer and the pure introspection."""

    _asyncio = False

    def __init__(
        self,
        url_or_client: Any = None,
        mounts: Mapping[str, Mount] | None = None,
        *,
        max_store_size: int | None = _MAX_STORE,
        write_policy: WritePolicy = "immediate",
        tag: str = "kv",
        client: Any = None,
        near: bool | int = False,
    ) -> None:
        if client is not None:
            if url_or_client is not None:
                raise ValueError("pass the URL or client positionally, or client=, not both")
            url_or_client = client
        self._store = core.KVStore(
            mounts or {}, max_store_size=max_store_size, write_policy=write_policy, tag=tag
        )
        self._buffer = core.WriteBuffer(None if self._asyncio else threading.Lock())
        entries = near_entries(near)
        self._near = None if entries is None else KVNear(self._store, entries)
        self._url: str | None = None
        self._client: Any = None
        if url_or_client is None or isinstance(url_or_client, str):
            self._url = url_or_client
        else:
            check_client(url_or_client, asyncio_=self._asyncio)
            self._client = url_or_client
        if self._store.write_policy == "dispose":  # never lose a buffer silently
            weakref.finalize(
                self, _flush_left, self._store, self._buffer, self._asyncio, self._url, self._client
            )

    @property
    def client(self) -> Any:
        """The client (built from the URL on first use; per event loop for ``AsyncKV``)."""
        if self._client is not None:
            return self._client
        return connect_async(self._url) if self._asyncio else connect(self._url)

    @property
    def near_stats(self) -> NearStats | None:
        """The near tier's counters (``near=``): hits served with no I/O, invalidations, ..."""
        return None if self._near is None else self._near.stats

    @property
    def write_policy(self) -> WritePolicy:
        """``"immediate"`` (writes go through) or ``"dispose"`` (buffered until a flush)."""
        return self._store.write_policy

    @property
    def pending(self) -> int:
        """How many writes are buffered (``dispose`` policy)."""
        return len(self._buffer)

    def mount(self, name: str) -> Namespace:
        """The mount as a bound namespace, for other patterns' ``mount=``."""
        return Namespace(self._store.spec(name).mount, self.client, asyncio=self._asyncio, name=name)

    def mounts(self) -> list[dict[str, str]]:
        """Every mount: ``{"name", "mode", "prefix"}``."""
        return self._store.mounts()

    def schema(self, mount: str) -> list[dict[str, Any]]:
        """The mount's schema fields: ``{"key", "type", "default"}`` (empty for an open mount)."""
        return self._store.schema(mount)


def _flush_left(
    store: core.KVStore, buffer: core.WriteBuffer, asyncio_: bool, url: str | None, client: Any
) -> None:
    """A ``dispose`` KV collected, or still alive at interpreter exit, with buffered writes: send
    them (an ``AsyncKV`` through a sync client of its URL), with a ``ResourceWarning``: ``close()``
    or a ``with`` block is where that belongs. A crash (kill -9) loses the buffer."""
    n = len(buffer)
    if not n:
        return
    if asyncio_ and client is not None:
        warnings.warn(
            f"AsyncKV dropped with {n} buffered writes that were never flushed (it was built on a "
            "client object, which cannot be used from here): use 'async with', close() or flush()",
            RuntimeWarning,
            stacklevel=1,
        )
        return
    try:
        run_sync(connect(url) if client is None or asyncio_ else client, core.flush_buffer(store, buffer))
    except Exception as exc:
        warnings.warn(f"kv: {n} buffered writes lost: {exc!r}", RuntimeWarning, stacklevel=1)
        return
    warnings.warn(
        f"a write_policy='dispose' KV was left with {n} buffered writes: flushed them now; "
        "call close() or use a 'with' block",
        ResourceWarning,
        stacklevel=1,
    )


class KV(_Base):
    """The kv facade on a sync client (see the module docstring and the README's "KV mounts")."""

    def get(self, mount: str, key: str) -> Any:
        """The value, else the schema default, else ``None``."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "get")
            return (got if isinstance(got, tuple) else run_sync(self.client, got))[1]
        return run_sync(self.client, core.op_get(self._store, self._buffer, mount, key))

    def get_or(self, mount: str, key: str, default: Any) -> Any:
        """The value, or ``default`` when the key is missing."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "get_or")
            found, value = got if isinstance(got, tuple) else run_sync(self.client, got)
            return value if found else default
        return run_sync(self.client, core.op_get_or(self._store, self._buffer, mount, key, default))

    def set(self, mount: str, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Write ``value`` (schema-checked, quotas enforced); ``ttl`` seconds overrides the mount's."""
        if self._near is not None:  # the near tier forgets the key (no wrapper on the hot path)
            return self._set_near(mount, key, value, ttl=ttl)
        if self._store.write_policy == "dispose":  # buffered: no I/O, no runner
            return core.buffer_set(self._store, self._buffer, mount, key, value, ttl)
        return run_sync(self.client, core.op_set(self._store, self._buffer, mount, key, value, ttl))

    @after_writes("key")
    def _set_near(self, mount: str, key: str, value: Any, *, ttl: float | None = None) -> bool:
        return run_sync(self.client, core.op_set(self._store, self._buffer, mount, key, value, ttl))

    @after_writes("key")
    def merge(self, mount: str, key: str, partial: Mapping[str, Any], *, ttl: float | None = None) -> bool:
        """Shallow-merge ``partial`` into the dict under ``key``, atomically."""
        return run_sync(self.client, core.op_merge(self._store, self._buffer, mount, key, partial, ttl))

    @after_writes("key")
    def delete(self, mount: str, key: str) -> bool:
        """Delete ``key``; ``True`` when it existed."""
        return run_sync(self.client, core.op_delete(self._store, self._buffer, mount, key))

    @after_writes("buffer")
    def keys(self, mount: str, *, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """Key names in lexicographic order; a page with ``start_after`` / ``limit``."""
        return run_sync(self.client, core.op_keys(self._store, self._buffer, mount, start_after, limit))

    def has(self, mount: str, key: str) -> bool:
        """``True`` when ``key`` holds a value (schema defaults do not count)."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "has")
            return bool((got if isinstance(got, tuple) else run_sync(self.client, got))[0])
        return run_sync(self.client, core.op_has(self._store, self._buffer, mount, key))

    @after_writes("mount")
    def clear(self, mount: str) -> bool:
        """Delete every record of this mount (only this mount); schema defaults show again."""
        return run_sync(self.client, core.op_clear(self._store, self._buffer, mount))

    @after_writes("buffer")
    def get_all(self, mount: str) -> dict[str, Any]:
        """Every record of the mount (and schema defaults), read in batches."""
        return run_sync(self.client, core.op_get_all(self._store, self._buffer, mount))

    @after_writes("buffer")
    def info(self, mount: str, key: str) -> KVInfo | None:
        """Size, content type, update time and TTL of a record, or ``None``."""
        return run_sync(self.client, core.op_info(self._store, self._buffer, mount, key))

    @after_writes("buffer")
    def flush(self) -> int:
        """Write the buffered writes (``dispose``) in one pipeline; how many were sent."""
        return run_sync(self.client, core.flush_buffer(self._store, self._buffer))

    def close(self) -> None:
        """Flush; the shared client stays open for others."""
        self.flush()

    def __enter__(self) -> KV:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncKV(_Base):
    """The asyncio twin of :class:`KV`: the same methods, awaited."""

    _asyncio = True

    async def get(self, mount: str, key: str) -> Any:
        """The value, else the schema default, else ``None``."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "get")
            return (got if isinstance(got, tuple) else await run_async(self.client, got))[1]
        return await run_async(self.client, core.op_get(self._store, self._buffer, mount, key))

    async def get_or(self, mount: str, key: str, default: Any) -> Any:
        """The value, or ``default`` when the key is missing."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "get_or")
            found, value = got if isinstance(got, tuple) else await run_async(self.client, got)
            return value if found else default
        return await run_async(self.client, core.op_get_or(self._store, self._buffer, mount, key, default))

    async def set(self, mount: str, key: str, value: Any, *, ttl: float | None = None) -> bool:
        """Write ``value`` (schema-checked, quotas enforced); ``ttl`` seconds overrides the mount's."""
        if self._near is not None:  # the near tier forgets the key (no wrapper on the hot path)
            return await self._set_near(mount, key, value, ttl=ttl)
        if self._store.write_policy == "dispose":  # buffered: no I/O, no runner
            return core.buffer_set(self._store, self._buffer, mount, key, value, ttl)
        return await run_async(self.client, core.op_set(self._store, self._buffer, mount, key, value, ttl))

    @after_writes("key")
    async def _set_near(self, mount: str, key: str, value: Any, *, ttl: float | None = None) -> bool:
        return await run_async(self.client, core.op_set(self._store, self._buffer, mount, key, value, ttl))

    @after_writes("key")
    async def merge(
        self, mount: str, key: str, partial: Mapping[str, Any], *, ttl: float | None = None
    ) -> bool:
        """Shallow-merge ``partial`` into the dict under ``key``, atomically."""
        return await run_async(
            self.client, core.op_merge(self._store, self._buffer, mount, key, partial, ttl)
        )

    @after_writes("key")
    async def delete(self, mount: str, key: str) -> bool:
        """Delete ``key``; ``True`` when it existed."""
        return await run_async(self.client, core.op_delete(self._store, self._buffer, mount, key))

    @after_writes("buffer")
    async def keys(
        self, mount: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Key names in lexicographic order; a page with ``start_after`` / ``limit``."""
        return await run_async(
            self.client, core.op_keys(self._store, self._buffer, mount, start_after, limit)
        )

    async def has(self, mount: str, key: str) -> bool:
        """``True`` when ``key`` holds a value (schema defaults do not count)."""
        if self._near is not None:
            got = self._near.read(self, mount, key, "has")
            return bool((got if isinstance(got, tuple) else await run_async(self.client, got))[0])
        return await run_async(self.client, core.op_has(self._store, self._buffer, mount, key))

    @after_writes("mount")
    async def clear(self, mount: str) -> bool:
        """Delete every record of this mount (only this mount); schema defaults show again."""
        return await run_async(self.client, core.op_clear(self._store, self._buffer, mount))

    @after_writes("buffer")
    async def get_all(self, mount: str) -> dict[str, Any]:
        """Every record of the mount (and schema defaults), read in batches."""
        return await run_async(self.client, core.op_get_all(self._store, self._buffer, mount))

    @after_writes("buffer")
    async def info(self, mount: str, key: str) -> KVInfo | None:
        """Size, content type, update time and TTL of a record, or ``None``."""
        return await run_async(self.client, core.op_info(self._store, self._buffer, mount, key))

    @after_writes("buffer")
    async def flush(self) -> int:
        """Write the buffered writes (``dispose``) in one pipeline; how many were sent."""
        return await run_async(self.client, core.flush_buffer(self._store, self._buffer))

    async def close(self) -> None:
        """Flush; the shared client stays open for others."""
        await self.flush()

    async def __aenter__(self) -> AsyncKV:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
