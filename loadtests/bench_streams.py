"""Streams: consumer drain vs the raw XREADGROUP + XACK floor, add / add_many vs raw XADD.

Drain cases, at ``count`` 10 / 100 / 1000: each call drains ``max(count, 200)`` entries through
``Consumer.run(max_messages=...)`` (reads of ``count`` entries, each batch's acks pipelined with
the next read, a final XACK). The floor does the same by hand with redis-py: ``XREADGROUP COUNT
n`` with the previous batch's ``XACK`` in one pipeline, then a final ``XACK``. Both handlers do
the same least work a real one does with each entry, get its id and its values: ours reads
``msg.id`` and ``msg.fields``; the floor's decodes the entry as redis-py hands it over, the id
with ``bytes.decode`` and each field name and value with ``bytes.decode`` / ``orjson.loads``
(what the producer's codec wrote), in one dict comprehension. Both streams are refilled (and
their consumed part trimmed) every few calls, so the median is the steady state. msg/s = entries
per call / median µs * 1e6.

``Stream.add_many`` of N entries is measured against N ``XADD`` in one pipeline (same encoding).

Every key is named per run and every group is created tolerantly, so a database used before
(even by an interrupted run) never fails the bench with ``BUSYGROUP``.
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

COUNTS = (10, 100, 1000)
ADD_MANY = (10, 100, 1000)
REFILL = 20_000
PAYLOAD = {"user": 42, "action": "click", "page": "/home"}

_counter = itertools.count()
_RUN = f"{os.getpid()}-{time.time_ns()}"  # names unique per run: a reused database holds no clash


def _per_call(count: int) -> int:
    return max(count, 200)


def _group(r: Any, key: str) -> None:
    """XGROUP CREATE that tolerates an existing group (a database used before)."""
    try:
        r.xgroup_create(key, "g", "0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _agroup(r: Any, key: str) -> None:
    try:
        await r.xgroup_create(key, "g", "0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class _Feeder:
    """Keeps a stream stocked: refills and trims consumed entries when fewer than 2 calls remain."""

    def __init__(self, key: str, raw_fields: dict[str, Any], per_call: int) -> None:
        self.key, self.fields, self.per_call = key, raw_fields, per_call
        self.left = 0

    def ops(self) -> list[tuple[Any, ...]]:
        ops: list[tuple[Any, ...]] = [("XTRIM", self.key, "MAXLEN", "~", self.per_call * 4)]
        flat = [x for kv in self.fields.items() for x in kv]
        ops += [("XADD", self.key, "*", *flat)] * REFILL
        return ops

    def need(self) -> bool:
        self.left -= self.per_call
        if self.left < self.per_call * 2:
            self.left += REFILL
            return True
        return False

    def refill_sync(self, client: Any) -> None:
        pipe = client.pipeline(transaction=False)
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


def _raw_drain(r: Any, key: str, count: int, total: int) -> int:
    n = 0
    acks: list[Any] = []
    read = ("XREADGROUP", "GROUP", "g", "raw", "COUNT", count, "STREAMS", key, ">")
    while n < total:
        if acks:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("XACK", key, "g", *acks)
            pipe.execute_command(*read)
            reply = pipe.execute()[1]
        else:
            reply = r.execute_command(*read)
        entries = reply[0][1]
        for entry in entries:
            _raw_handler(entry)
        acks = [e[0] for e in entries]
        n += len(entries)
    r.execute_command("XACK", key, "g", *acks)
    return n


async def _araw_drain(r: Any, key: str, count: int, total: int) -> int:
    n = 0
    acks: list[Any] = []
    read = ("XREADGROUP", "GROUP", "g", "raw", "COUNT", count, "STREAMS", key, ">")
    while n < total:
        if acks:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("XACK", key, "g", *acks)
            pipe.execute_command(*read)
            reply = (await pipe.execute())[1]
        else:
            reply = await r.execute_command(*read)
        entries = reply[0][1]
        for entry in entries:
            _raw_handler(entry)
        acks = [e[0] for e in entries]
        n += len(entries)
    await r.execute_command("XACK", key, "g", *acks)
    return n


def _handler(m: Any) -> tuple[str, dict[str, Any]]:
    """What ours does with each message: its id and its values."""
    return m.id, m.fields


def _raw_handler(entry: Any) -> tuple[str, dict[str, Any]]:
    """The floor's twin: the same id and values from the entry redis-py returns."""
    mid, fields = entry
    return mid.decode(), {k.decode(): orjson.loads(v) for k, v in fields.items()}


def _drain_cases(url: str, count: int) -> list[BenchCase]:
    run_id = f"{_RUN}-{next(_counter)}"
    total = _per_call(count)
    c = connect(url)
    raw = redis.Redis.from_url(url, protocol=2)
    ours = Stream(f"bench:{run_id}:ours", client=c)
    con = Consumer(ours, "g", "ours", count=count, block=1.0)
    con.ensure_group()
    floor_key = f"bench:{run_id}:floor"
    _group(raw, floor_key)
    f_ours = _Feeder(ours.key, _encoded(ours), total)
    f_floor = _Feeder(floor_key, _encoded(ours), total)

    def call() -> None:
        if f_ours.need():
            f_ours.refill_sync(c)
        con.run(_handler, max_messages=total)

    def floor() -> None:
        if f_floor.need():
            f_floor.refill_sync(raw)
        _raw_drain(raw, floor_key, count, total)

    # asyncio: clients are made inside the case's own event loop
    astate: dict[str, Any] = {}
    akey_floor = f"bench:{run_id}:afloor"
    af_ours = _Feeder("", {}, total)
    af_floor = _Feeder(akey_floor, {}, total)

    async def _ainit() -> None:
        if "c" in astate:
            return
        ac = connect_async(url)
        araw = redis.asyncio.Redis.from_url(url, protocol=2)
        stream = AsyncStream(f"bench:{run_id}:aours", client=ac)
        acon = AsyncConsumer(stream, "g", "ours", count=count, block=1.0)
        await acon.ensure_group()
        await _agroup(araw, akey_floor)
        af_ours.key, af_ours.fields = stream.key, _encoded(stream)
        af_floor.fields = _encoded(stream)
        astate.update(c=ac, raw=araw, con=acon)

    async def acall() -> None:
        await _ainit()
        if af_ours.need():
            await af_ours.refill_async(astate["c"])
        await astate["con"].run(_handler, max_messages=total)

    async def afloor() -> None:
        await _ainit()
        if af_floor.need():
            await af_floor.refill_async(astate["raw"])
        await _araw_drain(astate["raw"], akey_floor, count, total)

    note = f"{total} entries per call, reads of {count}; msg/s = {total}e6 / median"
    return [
        BenchCase("streams", f"Consumer.run drain count={count}", call, floor, note=note),
        BenchCase(
            "streams", f"AsyncConsumer.run drain count={count}", acall, afloor, is_async=True, note=note
        ),
    ]


def _add_many_cases(url: str, n: int) -> list[BenchCase]:
    c = connect(url)
    raw: Any = redis.Redis.from_url(url, protocol=2)
    s = Stream(f"bench:{_RUN}:many{n}", client=c, maxlen=10_000)
    entries = [PAYLOAD] * n

    def enc() -> list[Any]:  # what a hand-written producer does: one orjson.dumps per value
        return [x for k, v in PAYLOAD.items() for x in (k, orjson.dumps(v))]

    def floor() -> Any:
        pipe = raw.pipeline(transaction=False)
        for _ in range(n):
            pipe.execute_command("XADD", s.key, "MAXLEN", "~", 10_000, "*", *enc())
        return pipe.execute()

    return [BenchCase("streams", f"Stream.add_many {n}", lambda: s.add_many(entries), floor,
                      note="floor: N pipelined XADD")]  # fmt: skip


def _add_cases(url: str) -> list[BenchCase]:
    c = connect(url)
    raw: Any = redis.Redis.from_url(url, protocol=2)
    s = Stream(f"bench:{_RUN}:add", client=c, maxlen=10_000)
    keys = itertools.count()

    def _enc() -> list[Any]:
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
        st = await _get("s", lambda: AsyncStream(s.name, client=connect_async(url), maxlen=10_000))
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
    out: list[BenchCase] = []
    for count in COUNTS:
        out += _drain_cases(url, count)
    for n in ADD_MANY:
        out += _add_many_cases(url, n)
    return [*out, *_add_cases(url)]


def teardown() -> None:
    return None


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
