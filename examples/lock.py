"""Workers coordinating on a job with a lock: one runs it at a time, stale holders are fenced off.

REDIS_URL=redis://localhost:6379/0 python examples/lock.py
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import redispatterns as rp
from redispatterns.errors import LockTimeout
from redispatterns.lock import AsyncLock, Lock, locked


def main() -> None:
    client = rp.connect()
    mount = rp.Mount(prefix="example:")
    job = Lock("nightly-report", ttl=5, mount=mount, client=client)
    done: list[str] = []

    def worker(name: str) -> None:
        try:
            # waits (blocked on a release signal, not polling) for at most 3 s
            with job.acquire(timeout=3) as held:
                held.ensure_held()  # check the lease before the irreversible step
                held.fenced_set("report", {"by": name})  # refused if a newer holder wrote it
                time.sleep(0.05)  # the work
                done.append(f"{name} (fence {held.fence})")
        except LockTimeout:
            done.append(f"{name} gave up")

    workers = [threading.Thread(target=worker, args=(f"worker-{i}",)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("ran one at a time:", ", ".join(done))
    print("the report was last written by:", job.fenced_get("report"))

    # a long job keeps its lease alive and learns at once if it is lost
    long_job = Lock("rebuild-index", ttl=0.3, mount=mount, client=client, auto_renew=True)
    with long_job.acquire() as held:
        time.sleep(1.0)  # three leases long: the handle renewed it
        print(
            "after 1 s of a 0.3 s lease, still held:",
            not held.lost,
            "valid for",
            round(held.valid_for(), 2),
            "s",
        )

    @locked("invoice:{invoice_id}", ttl=5, mount=mount, client=client)
    def pay(invoice_id: int) -> str:
        return f"invoice {invoice_id} paid under its own lock"

    print(pay(7))  # type checkers see pay(invoice_id: int) -> str

    # a lost lease is logged once on "redispatterns.lock" (the library never configures logging)
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s %(levelname)s %(message)s")
    try:
        with Lock("short-lease", ttl=0.05, mount=mount, client=client):
            time.sleep(0.1)  # outlives its lease
    except rp.LockLost as exc:
        print("the block outlived its lease:", type(exc).__name__)

    # asyncio: any number of event loops, each with its own pooled client, closed with its loop
    async def in_a_loop() -> int:
        async with AsyncLock("nightly-report", ttl=5, mount=mount) as held:
            return held.fence

    print("fences from two asyncio.run() calls:", asyncio.run(in_a_loop()), asyncio.run(in_a_loop()))
    rp.close()  # close every client the library made


if __name__ == "__main__":
    main()
