"""Streams: consumer throughput vs the raw XREADGROUP + XACK floor, and add vs raw XADD.

The consumer case drains ``PER_CALL`` entries per call through ``Consumer.run(max_messages=...)``:
batches of 100, each batch's acks pipelined with the next read, and a final XACK. The floor does
the same by hand with redis-py and calls the same empty handler per entry: ``XREADGROUP COUNT 100``
with the previous batch's ``XACK`` in one pipeline, then a final ``XACK``. Both streams are refilled
(and their consumed part trimmed) every few calls, so the median is the steady state.
msg/s = PER_CALL / median µs * 1e6.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns.client import connect, connect_async
from redispatterns.streams import AsyncConsumer, AsyncStream, Consumer, Stream

PER_CALL = 500
BATCH = 100
REFILL = 25_000
PAYLOAD = {"user": 42, "action": "click", "page": "/home"}

_counter = itertools.count()
_RUN = f"{os.getpid()}-{time.time_ns()}"  # names unique per run: a reused database holds no clash


class _Feeder:
    """Keeps a stream stocked: refills and trims consumed entries when fewer than 2 calls remain."""

    def __init__(self, client: Any, key: str, raw_fields: dict[str, Any]) -> None:
        self.client, self.key, self.fields = client, key, raw_fields
        self.left = 0

    def ops(self) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = [("XTRIM", self.key, "MAXLEN", "~", PER_CALL * 4)]
        flat = [x for kv in self.fields.items() for x in kv]
        ops += [("XADD", self.key, "*", *flat)] * REFILL
        return ops

    def need(self) -> bool:
        self.left -= PER_CALL
        if self.left < PER_CALL * 2:
            self.left += REFILL
            return True
        return False

    def refill_sync(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for op in self.ops():
            pipe.execute_command(*op)
        pipe.execute()

    async def refill_async(self, client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for op in self.ops():
            pipe.execute_command(*op)
        await pipe.execute()


def _encoded(stream: Stream | AsyncStream) -> dict[str, Any]:
    return {k: stream.codec.encode(v) for k, v in PAYLOAD.items()}


def _raw_drain(r: Any, key: str, group: str) -> int:
    n = 0
    acks: list[Any] = []
    while n < PER_CALL:
        read = ("XREADGROUP", "GROUP", group, "raw", "COUNT", BATCH, "STREAMS", key, ">")
        if acks:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("XACK", key, group, *acks)
            pipe.execute_command(*read)
            reply = pipe.execute()[1]
        else:
            reply = r.execute_command(*read)
        entries = reply[0][1]
        for entry in entries:
            _noop(entry)  # the same (empty) handler, called per entry
        acks = [e[0] for e in entries]
        n += len(entries)
    r.execute_command("XACK", key, group, *acks)
    return n


async def _araw_drain(r: Any, key: str, group: str) -> int:
    n = 0
    acks: list[Any] = []
    while n < PER_CALL:
        read = ("XREADGROUP", "GROUP", group, "raw", "COUNT", BATCH, "STREAMS", key, ">")
        if acks:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("XACK", key, group, *acks)
            pipe.execute_command(*read)
            reply = (await pipe.execute())[1]
        else:
            reply = await r.execute_command(*read)
        entries = reply[0][1]
        for entry in entries:
            _noop(entry)
        acks = [e[0] for e in entries]
        n += len(entries)
    await r.execute_command("XACK", key, group, *acks)
    return n


def _noop(_m: Any) -> None:
    return None


def _consumer_cases(url: str) -> list[BenchCase]:
    run_id = f"{_RUN}-{next(_counter)}"
    c = connect(url)
    raw = redis.Redis.from_url(url, protocol=2)
    ours = Stream(f"bench:{run_id}:ours", client=c)
    con = Consumer(ours, "g", "ours", count=BATCH, block=1.0)
    con.ensure_group()
    floor_key = f"bench:{run_id}:floor"
    raw.xgroup_create(floor_key, "g", "0", mkstream=True)
    f_ours = _Feeder(c, ours.key, _encoded(ours))
    f_floor = _Feeder(raw, floor_key, _encoded(ours))

    def call() -> None:
        if f_ours.need():
            f_ours.refill_sync()
        con.run(_noop, max_messages=PER_CALL)

    def floor() -> None:
        if f_floor.need():
            f_floor.refill_sync()
        _raw_drain(raw, floor_key, "g")

    # asyncio: clients are made inside the case's own event loop
    astate: dict[str, Any] = {}
    akey_floor = f"bench:{run_id}:afloor"
    af_ours = _Feeder(None, "", {})
    af_floor = _Feeder(None, "", {})

    async def _ainit() -> None:
        if "c" in astate:
            return
        ac = connect_async(url)
        araw = redis.asyncio.Redis.from_url(url, protocol=2)
        stream = AsyncStream(f"bench:{run_id}:aours", client=ac)
        acon = AsyncConsumer(stream, "g", "ours", count=BATCH, block=1.0)
        await acon.ensure_group()
        try:
            await araw.xgroup_create(akey_floor, "g", "0", mkstream=True)
        except redis.ResponseError:
            pass
        af_ours.key, af_ours.fields = stream.key, _encoded(stream)
        af_floor.key, af_floor.fields = akey_floor, _encoded(stream)
        astate.update(c=ac, raw=araw, con=acon)

    async def acall() -> None:
        await _ainit()
        if af_ours.need():
            await af_ours.refill_async(astate["c"])
        await astate["con"].run(_noop, max_messages=PER_CALL)

    async def afloor() -> None:
        await _ainit()
        if af_floor.need():
            await af_floor.refill_async(astate["raw"])
        await _araw_drain(astate["raw"], akey_floor, "g")

    note = f"{PER_CALL} entries per call in batches of {BATCH}; msg/s = {PER_CALL}e6 / median"
    return [
        BenchCase("streams", f"Consumer.run drain {PER_CALL}", call, floor, note=note),
        BenchCase("streams", f"AsyncConsumer.run drain {PER_CALL}", acall, afloor, is_async=True, note=note),
    ]


def _add_cases(url: str) -> list[BenchCase]:
    c = connect(url)
    raw: Any = redis.Redis.from_url(url, protocol=2)
    s = Stream("bench:add", client=c, maxlen=10_000)
    keys = itertools.count()

    def _enc() -> list[Any]:  # what a hand-written producer does: one orjson.dumps per value
        return [x for k, v in PAYLOAD.items() for x in (k, orjson.dumps(v))]

    def floor() -> Any:
        return raw.execute_command("XADD", s.key, "MAXLEN", "~", 10_000, "*", *_enc())

    def idem() -> Any:
        return s.add(PAYLOAD, idempotency_key=f"k{next(keys)}")

    astate: dict[str, Any] = {}

    async def _get(name: str, make: Callable[[], Any]) -> Any:
        if name not in astate:
            astate[name] = make()
        return astate[name]

    async def acall() -> Any:
        st = await _get("s", lambda: AsyncStream("bench:add", client=connect_async(url), maxlen=10_000))
        return await st.add(PAYLOAD)

    async def afloor() -> Any:
        r = await _get("r", lambda: redis.asyncio.Redis.from_url(url, protocol=2))
        return await r.execute_command("XADD", s.key, "MAXLEN", "~", 10_000, "*", *_enc())

    return [
        BenchCase("streams", "Stream.add", lambda: s.add(PAYLOAD), floor),
        BenchCase("streams", "Stream.add idempotency_key (Lua)", idem, floor, note="floor: plain XADD"),
        BenchCase("streams", "AsyncStream.add", acall, afloor, is_async=True),
    ]


def cases(url: str) -> list[BenchCase]:
    return [*_consumer_cases(url), *_add_cases(url)]


def teardown() -> None:
    return None


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
