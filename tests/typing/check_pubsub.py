"""User code around pub/sub that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from typing_extensions import assert_type

import redispatterns as rp


def listen() -> list[int | None]:
    assert_type(rp.publish("orders", {"id": 7}), int)
    seqs: list[int | None] = []
    with rp.Subscriber(["orders"], on_gap=print, maxsize=100, overflow="drop_oldest") as sub:
        assert_type(sub, rp.Subscriber)
        msg = sub.get(timeout=1.0)
        assert_type(msg, rp.PubSubMessage | None)
        for m in sub:
            assert_type(m, rp.PubSubMessage)
            seqs.append(m.seq)
            break
        assert_type(sub.stats, rp.SubscriberStats)
        assert_type(list(sub.gaps), list[rp.Gap])
    return seqs


async def listen_async() -> None:
    pub = rp.AsyncPublisher(sharded=True)
    assert_type(await pub.publish("orders", b"raw"), int)

    async def handle(msg: rp.PubSubMessage) -> None:
        print(msg.channel, msg.data)

    async with rp.AsyncSubscriber(["orders"], handler=handle) as sub:
        assert_type(await sub.get(timeout=0.5), rp.PubSubMessage | None)
        async for m in sub:
            assert_type(m, rp.PubSubMessage)
            break
