"""``KV(near=...)``: a process-local tier in front of a KV object's reads.

Lookups and fills are :mod:`redispatterns._core.kv_near` calls on a
:class:`~redispatterns._core.near.NearStore`; coherence comes from the invalidation links of
:mod:`redispatterns._tracking` (one set of links for every mount of the object: ``BCAST`` on each
mount's record prefix). A local entry is served only while every link is up; a gap flushes the
tier. A write through *this* object drops what it touched at once (:func:`after_writes`), so it
reads its own writes; every other writer is heard through the server.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ._core import kv as core
from ._core import kv_near
from ._core.near import NearStats
from ._core.ops import Flow
from ._runner import monotonic
from ._tracking import Tracking, near_store, trackable, tracking_for

__all__ = ["NEAR_BYTES", "NEAR_ENTRIES", "KVNear", "after_writes", "near_entries"]

log = logging.getLogger("redispatterns.kv")
NEAR_ENTRIES = 10_000
NEAR_BYTES = 64 * 1024 * 1024
F = TypeVar("F", bound=Callable[..., Any])


def near_entries(near: object) -> int | None:
    """``near=`` checked: ``None`` (off) or the number of entries."""
    if near is False or near is None:
        return None
    if near is True:
        return NEAR_ENTRIES
    if isinstance(near, bool) or not isinstance(near, int) or near < 1:
        raise TypeError(f"near= must be True/False or a number of entries >= 1, got {near!r}")
    return near


class KVNear:
    """The near tier of one ``KV`` / ``AsyncKV`` object (every mount it reads)."""

    def __init__(self, store: core.KVStore, entries: int) -> None:
        self.store = store
        self.near = near_store(entries, NEAR_BYTES)
        self.stats: NearStats = self.near.stats
        self.prefixes = tuple(spec.base + "k:" for spec in store.specs.values())
        self.link: Tracking | None = None
        self.off = False  # a client that cannot be tracked (fakeredis, TLS): plain reads

    def _healthy(self, owner: Any) -> bool:
        t = self.link
        if t is None:
            if self.off:
                return False
            client = owner.client
            if not trackable(client):
                self.off = True
                log.warning("kv: near= needs a server that sends invalidations (not fakeredis or TLS): off")
                return False
            t = tracking_for(client, self.prefixes)
            if t is None:  # an asyncio Cluster before its first command
                return False
            t.register(self.near)
            self.link = t
        return t.healthy

    def read(self, owner: Any, mount: str, key: str, what: str) -> tuple[bool, Any] | Flow[tuple[bool, Any]]:
        """A local answer ``(found, value)``, or the flow to run: the read that fills the tier,
        or the plain read (the tier is off, or a write of ``key`` is buffered)."""
        spec = self.store.spec(mount)
        spec.mount.check_read(what, mount)
        key = spec.check_key(key)
        buffer = owner._buffer
        if buffer.entries:
            pending = buffer.lookup(mount, key)
            if pending is not None:
                return core.get(spec, key, pending)
        if not self._healthy(owner):
            return core.get(spec, key)
        now = monotonic()
        if self.link is not None and self.link.quiet(now):  # no invalidation waiting
            local = kv_near.lookup(self.near, spec, key, now)
            if local is not None:
                return local
        return kv_near.read(self.near, spec, key, now)

    def touched(
        self, owner: Any, scope: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """The record keys and the record prefixes (a whole mount) a write may change, read
        before it runs (the buffered writes it may send included)."""
        keys: list[str] = []
        prefixes: list[str] = []
        mount = args[0] if args else kwargs.get("mount")
        spec = self.store.specs.get(mount) if isinstance(mount, str) else None
        if spec is not None and scope == "key":
            key = args[1] if len(args) > 1 else kwargs.get("key")
            if isinstance(key, str):
                keys.append(spec.record(key))
        elif spec is not None and scope == "mount":
            prefixes.append(spec.base + "k:")
        for m, k in list(owner._buffer.entries):
            keys.append(self.store.specs[m].record(k))
        return keys, prefixes

    def forget(self, touched: tuple[list[str], list[str]]) -> None:
        keys, prefixes = touched
        if keys:
            self.near.drop(keys)
        for prefix in prefixes:
            self.near.drop_prefix(prefix)


def after_writes(scope: str) -> Callable[[F], F]:
    """For a ``KV`` method that writes (or may send buffered writes): when it returns or fails,
    drop from the object's near tier what it touched (``scope``: the ``"key"`` or the whole
    ``"mount"`` of its arguments, ``"buffer"``: the buffered writes only), so the object reads
    its own writes without waiting for the server's invalidation."""

    def wrap(method: F) -> F:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def awrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
                near: KVNear | None = self._near
                if near is None:
                    return await method(self, *args, **kwargs)
                touched = near.touched(self, scope, args, kwargs)
                try:
                    return await method(self, *args, **kwargs)
                finally:
                    near.forget(touched)

            return awrapped  # type: ignore[return-value]

        @functools.wraps(method)
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            near: KVNear | None = self._near
            if near is None:
                return method(self, *args, **kwargs)
            touched = near.touched(self, scope, args, kwargs)
            try:
                return method(self, *args, **kwargs)
            finally:
                near.forget(touched)

        return wrapped  # type: ignore[return-value]

    return wrap
