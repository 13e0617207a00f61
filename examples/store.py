"""Key-value stores with identity: open by name (created once), records with content types, metadata.

REDIS_URL=redis://localhost:6379/0 python examples/store.py
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import redispatterns as rp

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
MOUNT = rp.Mount(prefix="example:")


def main() -> None:
    client = rp.connect(URL)
    # eight workers open the same store at once: one creates it, all get the same id
    with ThreadPoolExecutor(8) as pool:
        stores = list(
            pool.map(lambda _: rp.KeyValueStore.open(name="crawl", client=client, mount=MOUNT), range(8))
        )
    store = stores[0]
    print(
        "one store:", len({s.id for s in stores}) == 1, "created by", sum(s.created for s in stores), "opener"
    )

    store.set_value("page-1", {"url": "https://example.com/", "links": 3})
    store.set_value("notes", "first run")
    store.set_value("logo", b"\x89PNG\r\n", content_type="image/png")
    print("page-1:", store.get_value("page-1"))
    print("logo:", store.get_record("logo"))
    for meta in store.iterate_keys(limit=10):
        print(f"  {meta.key:8} {meta.content_type:32} {meta.size} B")
    m = store.get_metadata()
    print(f"metadata: {m.item_count} records, {m.size} B, modified {m.modified_at:%H:%M:%S} UTC")

    print("purged:", store.purge(), "records; dropped:", store.drop())
    try:
        store.set_value("late", 1)
    except rp.StoreNotFound as exc:
        print("refused:", exc)

    async def run_scratch() -> None:  # the asyncio twin, an unnamed store for one run
        aclient = rp.connect_async(URL)
        scratch = await rp.AsyncKeyValueStore.open(alias="run-1", client=aclient, mount=MOUNT)
        await scratch.set_value("state", {"step": 1})
        print("async:", await scratch.get_value("state"), [k.key async for k in scratch.iterate_keys()])
        await scratch.drop()
        await aclient.aclose()

    asyncio.run(run_scratch())


if __name__ == "__main__":
    main()
