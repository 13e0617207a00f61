"""A producer and workers on a stream with a consumer group.

REDIS_URL=redis://localhost:6379/0 python examples/streams.py

The producer adds orders (a retried add with the same idempotency key adds nothing) and a
reminder due in half a second; a worker with 8 handler threads handles them, one customer's
orders in order, retries a failing order with exponential backoff and dead-letters it after 3
deliveries, then stops on its own once the stream is drained. Finally the metrics and the dead
letter are shown.
"""

from __future__ import annotations

import logging
import threading
import time

from redispatterns import Backoff
from redispatterns.streams import Consumer, Stream, StreamMessage


def produce(orders: Stream, n: int) -> None:
    for i in range(n):
        order = {"order": i, "customer": f"c{i % 5}", "sku": f"SKU-{i % 7}", "qty": 1 + i % 3}
        orders.add(order, idempotency_key=f"order-{i}")
    # a producer that lost a reply retries with the same key: no duplicate entry
    orders.add({"order": 0, "customer": "c0", "sku": "SKU-0", "qty": 1}, idempotency_key="order-0")
    # delivered no earlier than 0.5 s from now (server clock)
    orders.add({"order": -1, "customer": "c0", "reminder": "invoice 0 unpaid", "qty": 0}, delay=0.5)


def main() -> None:
    logging.basicConfig(level=logging.ERROR, format="log: %(name)s: %(message)s")  # dead letters
    orders = Stream("example:orders", maxlen=100_000)
    orders.delete()  # start clean on every run
    started = time.monotonic()
    produce(orders, 200)
    print(f"produced: {orders.length()} entries now, 1 reminder waiting (one retried add was deduplicated)")

    totals = {"qty": 0, "handled": 0}
    lock = threading.Lock()
    last_seen: dict[str, int] = {}

    def handle(msg: StreamMessage) -> None:
        if msg["order"] == 13:
            raise RuntimeError("payment service rejected order 13")
        if "reminder" in msg.fields:
            print(f"reminder after {time.monotonic() - started:.1f} s: {msg['reminder']}")
        time.sleep(0.002)  # an I/O-bound handler: 8 threads overlap these waits
        with lock:
            assert last_seen.get(msg["customer"], -2) < msg["order"] or msg["order"] == -1
            last_seen[msg["customer"]] = msg["order"]
            totals["qty"] += msg["qty"]
            totals["handled"] += 1

    def on_error(exc: BaseException, msg: StreamMessage) -> None:
        print(f"failed: order {msg['order']} (delivery {msg.delivery_count}): {exc}")

    worker = Consumer(
        orders, "billing", "billing-1", concurrency=8, order_by="customer", max_deliveries=3,
        retry_delay=Backoff.exponential(0.1, 0.4), on_error=on_error, min_idle=0.5, block=0.2,
    )  # fmt: skip
    # run() blocks: here in a thread, stopping by itself after 1 s without entries
    t = threading.Thread(target=worker.run, args=(handle,), kwargs={"until_idle": 1.0})
    t.start()
    t.join()

    s = worker.stats
    print(f"worker: handled {totals['handled']} entries, {totals['qty']} items; "
          f"retried {s.retried}, dead-lettered {s.dead_lettered}, delayed moved in {s.promoted}")  # fmt: skip
    m = worker.metrics()
    print(f"metrics: length={m.length} lag={m.lag} pending={m.pending} dead letters={m.dead_letters}")
    for d in orders.dead_letters():
        print(f"dead letter: entry {d.id} after {d.deliveries} deliveries: {d.error} -> {d.fields}")


if __name__ == "__main__":
    main()
