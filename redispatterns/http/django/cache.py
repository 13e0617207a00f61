"""A Django cache backend over ``@rp.cached``: ``get_or_set`` is stampede-protected.

``CACHES = {"default": {"BACKEND": "redispatterns.http.django.cache.RedisPatternsCache",
"LOCATION": "redis://...", "TIMEOUT": 300, "OPTIONS": {...}}}``. ``OPTIONS``: ``prefix`` (the
Redis key prefix, default ``"dj:<alias>:"``... ``"djcache:"``), ``pickle_secret`` (values as
HMAC-signed pickle, like Django's other backends; default: JSON via orjson, which refuses
arbitrary objects), ``stale_ttl`` (seconds a timed-out value may still be served by
``get_or_set`` while one caller recomputes it; default 0: none), ``client`` (a redis-py client
instead of ``LOCATION``).

Every entry is one ``@rp.cached`` entry keyed by the Django key, so ``get_or_set(key, fn)``
gets what ``@cached`` gives: under concurrent misses ``fn`` runs once (a fill lease in Redis
across processes, single-flight within one), early refresh (XFetch) and, with ``stale_ttl``,
stale-while-revalidate. ``get`` is one GET; ``set`` one script plus the registration of the
entry for ``clear()`` (a tag). ``add`` and ``incr`` are read-then-write, as in Django's base
class: not atomic across processes (use :class:`redispatterns.Lock` or a limiter for that).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from ... import cache as rp_cache
from ..._core.codec import JsonCodec, PickleCodec
from ..._core.mount import Mount
from ...client import connect

__all__ = ["RedisPatternsCache"]

FOREVER = 10 * 365 * 24 * 3600.0  # Django's timeout=None: Redis keeps no key without a TTL here
_ttl: contextvars.ContextVar[float] = contextvars.ContextVar("rp_django_ttl", default=300.0)


def _current_ttl(_result: Any) -> float:
    return _ttl.get()


def _call(default: Any) -> Any:
    return default() if callable(default) else default


class RedisPatternsCache(BaseCache):
    """``django.core.cache`` over Redis, one ``@rp.cached`` entry per key."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = dict(params.get("OPTIONS", {}))
        secret = options.pop("pickle_secret", None)
        codec = PickleCodec(secret=secret) if secret else JsonCodec()
        self._mount = Mount(prefix=options.pop("prefix", "djcache:"), codec=codec)
        self._client = options.pop("client", None) or connect(server or None)
        self._tag = "all"
        stale = float(options.pop("stale_ttl", 0))
        if options:
            raise ValueError(f"unknown OPTIONS for RedisPatternsCache: {sorted(options)}")

        def entry(key: str, default: Any) -> Any:
            return _call(default)

        self._entry: Any = rp_cache.cached(
            ttl=_current_ttl, key="{key}", ignore=("default",), tags=(self._tag,), name="django",
            jitter=0.0, stale_ttl=stale, mount=self._mount, client=self._client,
        )(entry)  # fmt: skip

    # ------------------------------------------------------------ helpers

    def _seconds(self, timeout: float | object | None) -> float | None:
        """The TTL for ``timeout`` (``None``: forever); ``<= 0`` means "expire now"."""
        t = self.get_backend_timeout(timeout)
        if t is None:
            return FOREVER
        return None if t <= 0 else float(t)

    def _with_ttl(self, timeout: Any, fn: Callable[[], Any]) -> Any:
        token = _ttl.set(self._seconds(timeout) or 0.0)
        try:
            return fn()
        finally:
            _ttl.reset(token)

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | None:
        """Seconds from now (Django passes absolute times to memcached; we keep the relative)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else float(timeout)

    # ------------------------------------------------------------ the Django API

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        value = self._entry.peek(self.make_and_validate_key(key, version=version), None)
        return default if value is rp_cache.NOT_CACHED else value

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        k = self.make_and_validate_key(key, version=version)
        if self._seconds(timeout) is None:
            self._entry.invalidate(k, None)
            return
        status = self._with_ttl(timeout, lambda: self._entry.set(value, k, None))
        if status == "codec":
            raise TypeError(
                f"cannot cache a {type(value).__name__} as JSON; set OPTIONS pickle_secret for pickle"
            )

    def add(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        if self.has_key(key, version=version):
            return False
        self.set(key, value, timeout, version=version)
        return True

    def get_or_set(
        self, key: str, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """The cached value, else ``default`` (called if callable) stored: computed once under
        concurrent misses."""
        k = self.make_and_validate_key(key, version=version)
        if self._seconds(timeout) is None:
            return _call(default)
        return self._with_ttl(timeout, lambda: self._entry(k, default))

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        k = self.make_and_validate_key(key, version=version)
        value = self._entry.peek(k, None)
        if value is rp_cache.NOT_CACHED:
            return False
        self.set(key, value, timeout, version=version)
        return True

    def delete(self, key: str, version: int | None = None) -> bool:
        return bool(self._entry.invalidate(self.make_and_validate_key(key, version=version), None))

    def has_key(self, key: str, version: int | None = None) -> bool:
        k = self.make_and_validate_key(key, version=version)
        return self._entry.peek(k, None) is not rp_cache.NOT_CACHED

    def clear(self) -> None:
        rp_cache.invalidate_tags(self._tag, mount=self._mount, client=self._client)

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        for key in keys:
            self.delete(key, version=version)
