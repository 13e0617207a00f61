"""Pub/sub cost: numbered publish vs raw PUBLISH, and publish-to-delivery vs raw redis-py PubSub.

``publish`` numbers each message in one script (INCR + PUBLISH, one round trip: the counter key
and the payload; the script takes the channel from the key); the floor is a raw ``PUBLISH`` of the
same encoded bytes. The round-trip cases publish one message and wait for
it on a subscriber: ours (``get()`` reads the connection on the caller's thread / task when the
reader is idle, + bounded queue + gap bookkeeping) against redis-py's ``PubSub.get_message``
polled on the caller's thread (no reconnect handling, no gap reports).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns._core.scripts import load
from redispatterns.client import connect, connect_async
from redispatterns.pubsub import AsyncPublisher, AsyncSubscriber, Publisher, Subscriber

_PAYLOAD = {"id": 42, "event": "order.created", "total": 19.5, "items": ["a", "b", "c"]}
_open: list[Any] = []


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    raw: Any = redis.Redis.from_url(url)
    script = raw.register_script(load("pubsub_publish").source)
    sscript = raw.register_script(load("pubsub_spublish").source)
    pub = Publisher(client=c)
    pub_plain = Publisher(client=c, sequence=False)
    pub_shard = Publisher(client=c, sharded=True)
    chan = "rp:pubsub:{bench}"

    # publish -> delivered, sync
    sub = Subscriber(["rt"], client=c).start()
    _open.append(sub)
    ps = raw.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("rp:pubsub:{rt-raw}")
    _open.append(ps)

    def rt() -> Any:
        pub.publish("rt", _PAYLOAD)
        return sub.get(timeout=5)

    def rt_floor() -> Any:
        raw.publish("rp:pubsub:{rt-raw}", orjson.dumps(_PAYLOAD))
        while True:
            m = ps.get_message(timeout=5)
            if m is not None:
                return orjson.loads(m["data"])

    ps_seq = raw.pubsub(ignore_subscribe_messages=True)
    ps_seq.subscribe("rp:pubsub:{rt-seq}")
    _open.append(ps_seq)

    def rt_floor_numbered() -> Any:
        script(keys=("rp:pubsub:{rt-seq}:seq",), args=(orjson.dumps(_PAYLOAD),))
        while True:
            m = ps_seq.get_message(timeout=5)
            if m is not None:
                return orjson.loads(m["data"].split(b":", 2)[2])

    # asyncio: clients (and the subscriber) are made lazily inside each case's own loop
    st: dict[str, Any] = {}

    async def apublish() -> Any:
        if "pub" not in st:
            st["pub"] = AsyncPublisher(client=connect_async(url))
        return await st["pub"].publish("bench", _PAYLOAD)

    async def apublish_floor() -> Any:
        if "raw" not in st:
            st["raw"] = redis.asyncio.Redis.from_url(url)
        return await st["raw"].publish(chan, orjson.dumps(_PAYLOAD))

    plain: dict[str, Any] = {}  # ours on a plain redis.asyncio client, per case (each has its loop)

    def _plain(case: str) -> tuple[Any, Any]:
        if case not in plain:
            raw_async = redis.asyncio.Redis.from_url(url)
            plain[case] = (AsyncPublisher(client=redis.asyncio.Redis.from_url(url)), raw_async)
        return plain[case]  # type: ignore[no-any-return]

    async def apublish_plain_script() -> Any:
        return await _plain("script")[0].publish("bench", _PAYLOAD)

    async def apublish_script_floor() -> Any:
        raw_async = _plain("script")[1]
        if "script_fn" not in plain:
            plain["script_fn"] = raw_async.register_script(load("pubsub_publish").source)
        return await plain["script_fn"](keys=("rp:pubsub:{bench}:seq",), args=(orjson.dumps(_PAYLOAD),))

    async def apublish_plain() -> Any:
        return await _plain("publish")[0].publish("bench", _PAYLOAD)

    async def apublish_plain_floor() -> Any:
        return await _plain("publish")[1].publish(chan, orjson.dumps(_PAYLOAD))

    rs: dict[str, Any] = {}

    async def art() -> Any:
        if "sub" not in rs:
            ac = connect_async(url)
            rs["pub"] = AsyncPublisher(client=ac)
            rs["sub"] = await AsyncSubscriber(["art"], client=ac).start()
        await rs["pub"].publish("art", _PAYLOAD)
        return await rs["sub"].get(timeout=5)

    async def art_floor() -> Any:
        if "ps" not in rs:
            rs["raw"] = redis.asyncio.Redis.from_url(url)
            rs["ps"] = rs["raw"].pubsub(ignore_subscribe_messages=True)
            await rs["ps"].subscribe("rp:pubsub:{art-raw}")
        await rs["raw"].publish("rp:pubsub:{art-raw}", orjson.dumps(_PAYLOAD))
        while True:
            m = await rs["ps"].get_message(timeout=5)
            if m is not None:
                return orjson.loads(m["data"])

    async def art_floor_numbered() -> Any:
        if "ps_seq" not in rs:
            rs["raw_seq"] = redis.asyncio.Redis.from_url(url)
            rs["script_seq"] = rs["raw_seq"].register_script(load("pubsub_publish").source)
            rs["ps_seq"] = rs["raw_seq"].pubsub(ignore_subscribe_messages=True)
            await rs["ps_seq"].subscribe("rp:pubsub:{art-seq}")
        await rs["script_seq"](keys=("rp:pubsub:{art-seq}:seq",), args=(orjson.dumps(_PAYLOAD),))
        while True:
            m = await rs["ps_seq"].get_message(timeout=5)
            if m is not None:
                return orjson.loads(m["data"].split(b":", 2)[2])

    rs2: dict[str, Any] = {}

    async def art_plain() -> Any:  # ours on a plain redis.asyncio client (no connect_async pool)
        if "sub" not in rs2:
            ac = redis.asyncio.Redis.from_url(url)
            rs2["pub"] = AsyncPublisher(client=ac)
            rs2["sub"] = await AsyncSubscriber(["art2"], client=ac).start()
        await rs2["pub"].publish("art2", _PAYLOAD)
        return await rs2["sub"].get(timeout=5)

    def script_floor(sharded: int) -> Any:
        fn = sscript if sharded else script
        return fn(keys=("rp:pubsub:{bench}:seq",), args=(orjson.dumps(_PAYLOAD),))

    return [
        BenchCase("pubsub", "publish numbered vs raw script", lambda: pub.publish("bench", _PAYLOAD),
                  lambda: script_floor(0), note="floor: the same script by hand (redis-py register_script)"),
        BenchCase("pubsub", "publish numbered vs raw PUBLISH", lambda: pub.publish("bench", _PAYLOAD),
                  lambda: raw.publish(chan, orjson.dumps(_PAYLOAD)),
                  note="floor: PUBLISH without numbering (what the sequence costs)"),
        BenchCase("pubsub", "publish sequence=False vs raw PUBLISH",
                  lambda: pub_plain.publish("bench", _PAYLOAD),
                  lambda: raw.publish(chan, orjson.dumps(_PAYLOAD))),
        BenchCase("pubsub", "publish sharded vs raw script", lambda: pub_shard.publish("bench", _PAYLOAD),
                  lambda: script_floor(1)),
        BenchCase("pubsub", "publish numbered vs raw PUBLISH", apublish, apublish_floor, is_async=True),
        BenchCase("pubsub", "publish numbered vs raw script", apublish_plain_script, apublish_script_floor,
                  is_async=True, note="both on a plain redis.asyncio client: our Python cost alone"),
        BenchCase("pubsub", "publish numbered vs raw PUBLISH (plain client)", apublish_plain,
                  apublish_plain_floor,
                  is_async=True, note="ours on a plain redis.asyncio client (no connect_async pool)"),
        BenchCase("pubsub", "publish -> delivered (Subscriber.get)", rt, rt_floor,
                  note="floor: redis-py PubSub.get_message on the caller's thread"),
        BenchCase("pubsub", "publish -> delivered, numbered on both sides", rt, rt_floor_numbered,
                  note="floor: the numbering script by hand + PubSub.get_message: the delivery alone"),
        BenchCase("pubsub", "publish -> delivered (AsyncSubscriber.get)", art, art_floor, is_async=True),
        BenchCase("pubsub", "publish -> delivered, numbered on both sides", art_plain, art_floor_numbered,
                  is_async=True, note="plain redis.asyncio clients; floor: the script + get_message"),
    ]  # fmt: skip


def teardown() -> None:
    for obj in _open:
        obj.close()
    _open.clear()


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
