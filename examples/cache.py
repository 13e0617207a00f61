"""Caching a slow lookup: one computation under a stampede, write-through, tags, fail-open.

REDIS_URL=redis://localhost:6379/0 python examples/cache.py
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import redispatterns as rp
from redispatterns.cache import CircuitBreaker, cached, invalidate_tags, write_through

DB: dict[int, dict[str, Any]] = {42: {"id": 42, "name": "Ada", "version": 1}}
QUERIES: list[int] = []


def main() -> None:
    client = rp.connect()  # $REDIS_URL
    mount = rp.Mount(prefix="example:", ttl=60)

    @cached(mount=mount, client=client, tags=["user:{user_id}"])
    def get_user(user_id: int) -> dict[str, Any] | None:
        QUERIES.append(user_id)
        time.sleep(0.2)  # a slow database
        return DB.get(user_id)

    for uid in (42, 7):  # start cold, so a second run prints the same
        get_user.invalidate(uid)
    threads = [threading.Thread(target=get_user, args=(42,)) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"50 concurrent callers, {len(QUERIES)} database query; stats: {get_user.stats}")
    print("a missing user is cached as None too:", get_user(7), get_user(7), f"({len(QUERIES)} queries)")

    @write_through(get_user, version=lambda u: u["version"])
    def rename(user_id: int, name: str) -> dict[str, Any]:
        DB[user_id] = {**DB[user_id], "name": name, "version": DB[user_id]["version"] + 1}
        return DB[user_id]

    rename(42, "Ada Lovelace")
    print("after the write, the cache holds:", get_user.peek(42))
    print("invalidate_tags('user:42') deleted", invalidate_tags("user:42", mount=mount, client=client), "key")
    print("peek now:", get_user.peek(42) is rp.NOT_CACHED and "nothing cached")

    # a Redis that is not there: results still flow; the breaker opens after 2 failures
    from redispatterns.testing.servers import free_port

    dead = rp.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)

    @cached(ttl=60, client=dead, breaker=CircuitBreaker(threshold=2, reset_after=30))
    def square(x: int) -> int:
        return x * x

    print("Redis down:", [square(i) for i in range(5)], "breaker:", square.stats.breaker_state)

    async def async_part() -> None:
        aclient = rp.connect_async()

        @cached(ttl=60, mount=mount, client=aclient)
        async def total(order_id: str) -> float:
            QUERIES.append(-1)
            await asyncio.sleep(0.1)
            return 99.5

        await total.invalidate("A-1")
        before = len(QUERIES)
        results = await asyncio.gather(*(total("A-1") for _ in range(100)))
        print(f"async: 100 tasks got {set(results)} from {len(QUERIES) - before} computation")
        await aclient.aclose()

    asyncio.run(async_part())


if __name__ == "__main__":
    main()
