"""Key-value stores with identity (S1) against raw redis-py: open, get, set (+ metadata), keys, exists.

The floor of each call is the same data access without the bookkeeping: HGET / HEXISTS for reads,
HSET for a write (no record metadata, no store metadata), HGETALL for metadata.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns import AsyncKeyValueStore, KeyValueStore, Mount
from redispatterns.client import connect, connect_async

MOUNT = Mount(prefix="bench:")
VALUE = {"url": "https://example.com/", "title": "Home", "links": 42}


def cases(url: str) -> list[BenchCase]:
    store = KeyValueStore.open(name="bench", client=connect(url), mount=MOUNT)
    store.purge()
    for i in range(100):
        store.set_value(f"item{i:03}", {"i": i})
    store.set_value("page", VALUE)
    k = store._keys
    raw = redis.Redis.from_url(url)
    state: dict[str, Any] = {}

    async def aget() -> Any:
        if "store" not in state:
            state["store"] = await AsyncKeyValueStore.open(
                name="bench", client=connect_async(url), mount=MOUNT
            )
        return await state["store"].get_value("page")

    async def afloor() -> Any:
        if "raw" not in state:
            state["raw"] = redis.asyncio.Redis.from_url(url)
        return orjson.loads((await state["raw"].hget(k.items, "page"))[1:])

    def raw_get() -> Any:
        return orjson.loads(raw.hget(k.items, "page")[1:])  # type: ignore[index]

    def reopen() -> KeyValueStore:
        return KeyValueStore.open(name="bench", client=store.client, mount=MOUNT)

    def keys_100() -> int:
        return sum(1 for _ in store.iterate_keys(limit=100))

    def raw_keys_100() -> Any:
        names = raw.zrangebylex(k.index, "-", "+", start=0, num=100)
        return raw.hmget(k.records, names)

    return [
        BenchCase("store", "open(name=) existing", reopen, lambda: raw.hgetall(k.meta),
                  note="1 script (create-if-absent) vs HGETALL"),
        BenchCase("store", "get_value", lambda: store.get_value("page"),
                  raw_get, note="HGET + decode vs HGET + loads"),
        BenchCase("store", "set_value (+ metadata)", lambda: store.set_value("page", VALUE),
                  lambda: raw.hset(k.items, "page", b"j" + orjson.dumps(VALUE)), note="1 script vs HSET"),
        BenchCase("store", "record_exists", lambda: store.record_exists("page"),
                  lambda: raw.hexists(k.items, "page")),
        BenchCase("store", "get_metadata", store.get_metadata, lambda: raw.hgetall(k.meta)),
        BenchCase("store", "iterate_keys (100)", keys_100, raw_keys_100,
                  note="1 script vs ZRANGEBYLEX + HMGET (2 round trips)"),
        BenchCase("store", "get_value (async)", aget, afloor, is_async=True),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
