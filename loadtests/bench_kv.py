"""The kv facade against raw redis-py: get, set (quotas + TTL in one script), dispose flush, get_all."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns import Mount
from redispatterns.client import connect
from redispatterns.kv import KV, AsyncKV

MOUNTS = {"user": Mount(prefix="bench:kv:", ttl=3600)}
VALUE = {"name": "Ada", "langs": ["en", "fr"], "n": 42}
RECORD = "bench:kv:{kv}:k:profile"


def cases(url: str) -> list[BenchCase]:
    kv = KV(connect(url), MOUNTS, write_policy="immediate")
    buffered = KV(connect(url), MOUNTS, write_policy="dispose")
    kv.set("user", "profile", VALUE)
    for i in range(100):
        kv.set("user", f"item{i:03}", {"i": i})
    raw = redis.Redis.from_url(url)
    payload = raw.get(RECORD)
    assert payload is not None

    def dispose_100() -> int:
        for i in range(100):
            buffered.set("user", f"b{i:03}", i)
        return buffered.flush()

    def raw_pipeline_100() -> Any:
        pipe = raw.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"bench:kv:raw{i:03}", i, px=3_600_000)
        return pipe.execute()

    item_keys = [f"bench:kv:{{kv}}:k:item{i:03}" for i in range(100)]
    state: dict[str, Any] = {}

    async def aget() -> Any:
        if "kv" not in state:
            state["kv"] = AsyncKV(redis.asyncio.Redis.from_url(url), MOUNTS, write_policy="immediate")
        return await state["kv"].get("user", "profile")

    async def afloor() -> Any:
        if "raw" not in state:
            state["raw"] = redis.asyncio.Redis.from_url(url)
        return await state["raw"].get(RECORD)

    return [
        BenchCase("kv", "get", lambda: kv.get("user", "profile"), lambda: raw.get(RECORD),
                  note="GET + decode vs GET"),
        BenchCase("kv", "set (quotas, TTL, index: 1 script)", lambda: kv.set("user", "profile", VALUE),
                  lambda: raw.set(RECORD, payload, px=3_600_000), note="EVALSHA vs SET PX"),
        BenchCase("kv", "has", lambda: kv.has("user", "profile"), lambda: raw.exists(RECORD)),
        BenchCase("kv", "dispose: 100 sets + flush", dispose_100, raw_pipeline_100,
                  note="1 pipeline of scripts vs 1 pipeline of SETs"),
        BenchCase("kv", "get_all (100 records)", lambda: kv.get_all("user"),
                  lambda: raw.mget(item_keys), note="index page + MGET vs MGET"),
        BenchCase("kv", "get (async)", aget, afloor, is_async=True),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
