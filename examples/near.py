"""Near tiers: read-mostly data served from process memory, kept coherent by the server.

A feature-flag mount read on every request (``KV(near=True)``) and a cached lookup
(``@cached(near=True)``): repeated reads do no I/O, and a write by anyone reaches every
process's local copy through Redis's invalidation messages (``CLIENT TRACKING``).

REDIS_URL=redis://localhost:6379/0 python examples/near.py
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redispatterns as rp
from redispatterns.kv import KV, AsyncKV

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
MOUNTS = {"flags": rp.Mount("read-write", "example:flags:")}


def until(check: Any, within: float = 10.0) -> float:
    """Seconds until ``check()`` is true."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > within:
            raise RuntimeError("timed out")
        time.sleep(0.0005)
    return time.perf_counter() - t0


def main() -> None:
    flags = KV(URL, MOUNTS, near=True)  # this process's reader
    admin = KV(URL, MOUNTS)  # stands in for another process: it writes, no near tier
    admin.set("flags", "checkout", {"enabled": False, "rollout": 0.1})
    stats = flags.near_stats
    assert stats is not None
    until(lambda: flags.get("flags", "checkout") is not None and stats.hits > 0)  # links are up

    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        flag = flags.get("flags", "checkout")
    local_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(2_000):
        admin.get("flags", "checkout")
    redis_us = (time.perf_counter() - t0) / 2_000 * 1e6
    print(f"a local read: {local_us:.1f} µs, a Redis read: {redis_us:.1f} µs; flag = {flag}")
    flag["enabled"] = "mutated"  # each read decodes its own copy: the next read is unharmed

    admin.set("flags", "checkout", {"enabled": True, "rollout": 0.5})  # a write elsewhere
    took = until(lambda: flags.get("flags", "checkout")["enabled"] is True)
    print(f"the other process's write reached this one in {took * 1000:.2f} ms")
    flags.set("flags", "banner", "hello")  # this object's own writes are read back at once
    print("own write read back:", flags.get("flags", "banner"))
    print(f"near stats: hits={stats.hits} invalidations={stats.invalidations} entries={stats.entries}")

    @rp.cached(ttl=300, near=True, mount=rp.Mount(prefix="example:near:"), client=rp.connect(URL))
    def price(sku: str) -> dict[str, Any]:
        time.sleep(0.05)  # a slow service
        return {"sku": sku, "cents": 1999}

    price("A-1")
    until(lambda: price("A-1") is not None and price.stats.near is not None and price.stats.near.hits > 0)
    print("cached price, served locally:", price("A-1"), price.stats)

    async def async_reader() -> None:
        aflags = AsyncKV(URL, MOUNTS, near=True)
        deadline = time.perf_counter() + 10
        while aflags.near_stats is not None and aflags.near_stats.hits == 0:
            assert time.perf_counter() < deadline
            await aflags.get("flags", "checkout")
            await asyncio.sleep(0.001)
        print("async, served locally:", await aflags.get("flags", "checkout"))

    asyncio.run(async_reader())
    admin.clear("flags")


if __name__ == "__main__":
    main()
