"""User code around streams and consumers that must type-check under ``mypy --strict``."""

from __future__ import annotations

import datetime as dt

from typing_extensions import assert_type

import redispatterns as rp


def produce(orders: rp.Stream) -> None:
    assert_type(orders.add({"sku": "A-1"}, idempotency_key="o-1"), str)
    assert_type(orders.add({"remind": 1}, delay=30.0), str)
    assert_type(orders.add({"remind": 2}, not_before=dt.datetime.now(dt.timezone.utc)), str)
    assert_type(orders.add_many([{"n": 1}, {"n": 2}]), list[str])
    assert_type(orders.metrics("billing"), rp.StreamStats)
    assert_type(orders.dead_letters(), list[rp.DeadLetter])


def work(orders: rp.Stream) -> rp.ConsumerStats:
    def handle(m: rp.StreamMessage) -> None:
        assert_type(m.id, str)
        assert_type(m.delivery_count, int)
        if m["qty"] > 3:
            assert_type(m.nack(), int)

    def failed(exc: BaseException, m: rp.StreamMessage) -> None:
        print(exc, m.id)

    worker = rp.Consumer(
        orders, "billing", "billing-1", concurrency=8, order_by="customer", on_error=failed,
        retry_delay=rp.Backoff.exponential(0.5, 20.0, jitter=0.5),
    )  # fmt: skip
    assert_type(worker.stream, rp.Stream)
    assert_type(worker.read(), list[rp.StreamMessage])
    assert_type(worker.ack("1-0"), int)
    return worker.run(handle, until_idle=1.0)


async def work_async(orders: rp.AsyncStream) -> None:
    async def handle(m: rp.AsyncStreamMessage) -> None:
        assert_type(await m.ack(), int)

    worker = rp.AsyncConsumer(orders, "billing", concurrency=16, retry_delay=rp.Backoff.fixed(2.0))
    assert_type(worker.stream, rp.AsyncStream)
    assert_type(await orders.add({"n": 1}, delay=5), str)
    assert_type(await worker.run(handle, max_messages=10), rp.ConsumerStats)
    assert_type(await worker.nack("1-0", delay=1.0), int)
