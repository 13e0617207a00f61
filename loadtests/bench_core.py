"""The runner's own cost: a GET through a flow vs ``client.get`` by hand."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns._core.ops import Command, Flow
from redispatterns._runner import run_async, run_sync
from redispatterns.client import connect


def _get(key: str) -> Flow[Any]:
    return (yield Command("GET", key))


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    c.set("bench:core", b"x" * 100)
    raw = redis.Redis.from_url(url)
    araw: dict[str, Any] = {}

    async def afloor() -> Any:
        if "c" not in araw:
            araw["c"] = redis.asyncio.Redis.from_url(url)
        return await araw["c"].get("bench:core")

    aclient: dict[str, Any] = {}

    async def acall() -> Any:
        if "c" not in aclient:
            aclient["c"] = redis.asyncio.Redis.from_url(url)
        return await run_async(aclient["c"], _get("bench:core"))

    return [
        BenchCase("core", "GET through run_sync", lambda: run_sync(c, _get("bench:core")),
                  lambda: raw.get("bench:core")),
        BenchCase("core", "GET through run_async", acall, afloor, is_async=True),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
