"""The kv facade against raw redis-py: get, set (quotas + TTL in one script), dispose flush, get_all.

The bulk cases run at N = 10 / 100 / 1000 / 10000: a ``dispose`` buffer of N sets flushed (one
``kv_flush`` script, every quota checked) against N ``SET ... PX`` in one pipeline, and
``get_all`` of a mount holding N records (one ``SORT ... GET``) against one MGET of the N known
keys, each value through ``orjson.loads``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns import Mount
from redispatterns.client import connect, connect_async
from redispatterns.kv import KV, AsyncKV

MOUNTS = {"user": Mount(prefix="bench:kv:", ttl=3600)}
VALUE = {"name": "Ada", "langs": ["en", "fr"], "n": 42}
RECORD = "bench:kv:{kv}:k:profile"
SIZES = (10, 100, 1000, 10_000)
_created: list[Any] = []


def _calls(n: int) -> int:
    return max(24, min(3000, 60_000 // n))


def _bulk_mounts() -> dict[str, Mount]:
    """One mount per size: flushes write bN (quotas on), get_all reads gN."""
    out = {f"b{n}": Mount(prefix=f"bench:b{n}:", ttl=3600, max_entries=2 * n) for n in SIZES}
    out.update({f"g{n}": Mount(prefix=f"bench:g{n}:", max_entries=2 * n) for n in SIZES})
    return out


def cases(url: str) -> list[BenchCase]:
    kv = KV(connect(url), MOUNTS, write_policy="immediate")
    kv.set("user", "profile", VALUE)
    for i in range(100):
        kv.set("user", f"item{i:03}", {"i": i})
    raw = redis.Redis.from_url(url)
    _created.append(raw)
    payload = raw.get(RECORD)
    assert payload is not None
    state: dict[str, Any] = {}

    def on_loop() -> tuple[Any, Any]:
        """The async KV and raw client of the running loop (each async case runs its own loop)."""
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:
            state["loop"] = loop
            state["kv"] = AsyncKV(connect_async(url), MOUNTS, write_policy="immediate")
            state["raw"] = redis.asyncio.Redis.from_url(url)
            state["plain"] = AsyncKV(redis.asyncio.Redis.from_url(url), MOUNTS, write_policy="immediate")
        return state["kv"], state["raw"]

    async def aget() -> Any:
        return await on_loop()[0].get("user", "profile")

    async def aset() -> Any:
        return await on_loop()[0].set("user", "profile", VALUE)

    async def aset_plain() -> Any:
        on_loop()
        return await state["plain"].set("user", "profile", VALUE)

    async def afloor() -> Any:
        return await on_loop()[1].get(RECORD)

    async def aset_floor() -> Any:
        return await on_loop()[1].set(RECORD, payload, px=3_600_000)

    out = [
        BenchCase("kv", "get", lambda: kv.get("user", "profile"), lambda: raw.get(RECORD),
                  note="GET + decode vs GET"),
        BenchCase("kv", "set (quotas, TTL, index: 1 script)", lambda: kv.set("user", "profile", VALUE),
                  lambda: raw.set(RECORD, payload, px=3_600_000), note="EVALSHA vs SET PX"),
        BenchCase("kv", "has", lambda: kv.has("user", "profile"), lambda: raw.exists(RECORD)),
        BenchCase("kv", "get (async)", aget, afloor, is_async=True),
        BenchCase("kv", "set (async)", aset, aset_floor, is_async=True, note="EVALSHA vs SET PX"),
        BenchCase("kv", "set (async, plain client)", aset_plain, aset_floor, is_async=True,
                  note="ours on a plain redis.asyncio client (no connect_async pool)"),
    ]  # fmt: skip
    return out + _bulk_cases(url, raw)


def _bulk_cases(url: str, raw: redis.Redis) -> list[BenchCase]:
    mounts = _bulk_mounts()
    kv = KV(connect(url), mounts, write_policy="immediate", max_store_size=None)
    buffered = KV(connect(url), mounts, write_policy="dispose", max_store_size=64 * 2**20)
    values = [{"i": i, "name": f"player {i}"} for i in range(max(SIZES))]
    payloads = [orjson.dumps(v) for v in values]
    loads = orjson.loads
    state: dict[Any, Any] = {}
    out: list[BenchCase] = []

    def abuffered() -> Any:
        """The async KV and raw client of the running loop (each async case runs its own loop)."""
        loop = asyncio.get_running_loop()
        if state.get("loop") is not loop:
            state["loop"] = loop
            state["kv"] = AsyncKV(connect_async(url), mounts, write_policy="dispose",
                                  max_store_size=64 * 2**20)  # fmt: skip
            state["raw"] = redis.asyncio.Redis.from_url(url)
        return state["kv"]

    for n in SIZES:
        names = [f"k{i:05}" for i in range(n)]
        with kv.client.pipeline(transaction=False) as pipe:  # get_all's records, written by hand
            for k, p in zip(names, payloads, strict=False):
                pipe.set(f"bench:g{n}:{{kv}}:k:{k}", p)
            pipe.zadd(f"bench:g{n}:{{kv}}:i", dict.fromkeys(names, 0))
            pipe.execute()
        gkeys = [f"bench:g{n}:{{kv}}:k:{k}" for k in names]
        hand_keys = [f"bench:hand{n}:{k}" for k in names]

        def flush(n: int = n, names: list[str] = names) -> Any:
            m = f"b{n}"
            for k, v in zip(names, values, strict=False):
                buffered.set(m, k, v)
            return buffered.flush()

        def pipelined(n: int = n, keys: list[str] = hand_keys) -> Any:
            pipe = raw.pipeline(transaction=False)
            for k, v in zip(keys, values, strict=False):
                pipe.set(k, orjson.dumps(v), px=3_600_000)
            return pipe.execute()

        async def aflush(n: int = n, names: list[str] = names) -> Any:
            b = abuffered()
            m = f"b{n}"
            for k, v in zip(names, values, strict=False):
                await b.set(m, k, v)
            return await b.flush()

        async def apipelined(n: int = n, keys: list[str] = hand_keys) -> Any:
            abuffered()
            pipe = state["raw"].pipeline(transaction=False)
            for k, v in zip(keys, values, strict=False):
                pipe.set(k, orjson.dumps(v), px=3_600_000)
            return await pipe.execute()

        def by_hand(names: list[str] = names, keys: list[str] = gkeys) -> Any:
            got: Any = raw.mget(keys)
            return {k: loads(v) for k, v in zip(names, got, strict=True)}

        def get_all(n: int = n) -> Any:
            return kv.get_all(f"g{n}")

        async def aget_all(n: int = n) -> Any:
            return await abuffered().get_all(f"g{n}")

        async def aby_hand(names: list[str] = names, keys: list[str] = gkeys) -> Any:
            abuffered()
            got = await state["raw"].mget(keys)
            return {k: loads(v) for k, v in zip(names, got, strict=True)}

        c = _calls(n)
        out += [
            BenchCase("kv", f"dispose flush N={n}", flush, pipelined, calls=c,
                      note="N sets buffered + one kv_flush (quotas exact) vs N SET PX in one pipeline"),
            BenchCase("kv", f"dispose flush N={n}", aflush, apipelined, is_async=True, calls=c),
            BenchCase("kv", f"get_all N={n}", get_all, by_hand, calls=c,
                      note="one SORT ... GET vs one MGET of the known keys, + orjson.loads each"),
            BenchCase("kv", f"get_all N={n}", aget_all, aby_hand, is_async=True, calls=c),
        ]  # fmt: skip
    return out


def teardown() -> None:
    for c in _created:
        c.close()
    _created.clear()


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
