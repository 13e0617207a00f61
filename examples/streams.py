"""A producer and a worker on a stream with a consumer group.

REDIS_URL=redis://localhost:6379/0 python examples/streams.py

The producer adds orders (a retried add with the same idempotency key adds nothing); the worker
handles them in batches, retries a failing order and dead-letters it after 3 deliveries, then
stops on its own once the stream is drained. Finally the metrics and the dead letter are shown.
"""

from __future__ import annotations

import threading

from redispatterns.streams import Consumer, Stream, StreamMessage


def produce(orders: Stream, n: int) -> None:
    for i in range(n):
        orders.add({"order": i, "sku": f"SKU-{i % 7}", "qty": 1 + i % 3}, idempotency_key=f"order-{i}")
    # a producer that lost a reply retries with the same key: no duplicate entry
    orders.add({"order": 0, "sku": "SKU-0", "qty": 1}, idempotency_key="order-0")


def main() -> None:
    orders = Stream("example:orders", maxlen=100_000)
    orders.delete()  # start clean on every run
    produce(orders, 200)
    print(f"produced: {orders.length()} entries (one retried add was deduplicated)")

    totals = {"qty": 0, "handled": 0}

    def handle(msg: StreamMessage) -> None:
        if msg["order"] == 13:
            raise RuntimeError("payment service rejected order 13")
        totals["qty"] += msg["qty"]
        totals["handled"] += 1

    worker = Consumer(orders, "billing", "billing-1", max_deliveries=3, min_idle=0.5, block=0.2)
    # run() blocks: here in a thread, stopping by itself after 1 s without entries
    t = threading.Thread(target=worker.run, args=(handle,), kwargs={"until_idle": 1.0})
    t.start()
    t.join()

    s = worker.stats
    print(f"worker: handled {totals['handled']} orders, {totals['qty']} items; "
          f"retried {s.retried}, dead-lettered {s.dead_lettered}")  # fmt: skip
    m = worker.metrics()
    print(f"metrics: length={m.length} lag={m.lag} pending={m.pending} dead letters={m.dead_letters}")
    for d in orders.dead_letters():
        print(f"dead letter: entry {d.id} after {d.deliveries} deliveries: {d.error} -> {d.fields}")


if __name__ == "__main__":
    main()
