"""User code around ``@cached`` / ``@write_through`` that must type-check under ``mypy --strict``
with no ignores: the call signature is the original one, the handle methods are typed."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import redispatterns as rp
from redispatterns.cache import NOT_CACHED, NotCached, StoreStatus


@rp.cached(ttl=60)
def get_user(user_id: int, *, db: str = "main") -> dict[str, Any]:
    return {"id": user_id, "db": db}


@rp.cached
def plain(x: str) -> int:
    return len(x)


@rp.cached(ttl=60)
async def total(order_id: str) -> float:
    return 9.5


@rp.cached(ttl=60, near=1_000)
def near_user(user_id: int) -> dict[str, Any]:
    return {"id": user_id}


class Repo:
    @rp.cached(ttl=60)
    def find(self, key: str) -> bytes:
        return key.encode()


def sync_use() -> None:
    assert_type(get_user(42), dict[str, Any])
    assert_type(get_user(42, db="replica"), dict[str, Any])
    assert_type(plain("abc"), int)
    assert_type(get_user.invalidate(42), int)
    assert_type(get_user.refresh(42), dict[str, Any])
    assert_type(get_user.set({"id": 42}, 42), StoreStatus)
    assert_type(get_user.key(42, db="x"), str)
    assert_type(get_user.stats, rp.CacheStats)
    assert_type(get_user.breaker, rp.CircuitBreaker)
    seen = get_user.peek(42)
    assert_type(seen, dict[str, Any] | NotCached)
    if seen is NOT_CACHED:
        return
    assert_type(seen, dict[str, Any])
    assert_type(Repo().find("k"), bytes)
    cached_fn: rp.Cached[[int], dict[str, Any]] = get_user  # a named type for user annotations
    assert cached_fn is get_user
    assert_type(rp.invalidate_tags("user:42"), int)
    assert_type(near_user(1), dict[str, Any])


async def async_use() -> None:
    assert_type(await total("A-1"), float)
    assert_type(await total.invalidate("A-1"), int)
    assert_type(await total.peek("A-1"), float | NotCached)
    assert_type(await total.refresh("A-1"), float)
    assert_type(await total.set(1.5, "A-1"), StoreStatus)
    assert_type(total.key("A-1"), str)
    handle: rp.AsyncCached[[str], float] = total
    assert handle is total
    assert_type(await rp.invalidate_tags_async("user:42"), int)


@rp.write_through(get_user, args={"user_id": "uid"})
def rename(uid: int, name: str) -> dict[str, Any]:
    return {"id": uid, "name": name}


@rp.write_through(total)
async def pay(order_id: str) -> float:
    return 0.0


def writes() -> None:
    assert_type(rename(42, "Ada"), dict[str, Any])
    w: rp.WriteThrough[[int, str], dict[str, Any]] = rename
    assert w is rename


async def async_writes() -> None:
    assert_type(await pay("A-1"), float)
    w: rp.AsyncWriteThrough[[str], float] = pay
    assert w is pay
