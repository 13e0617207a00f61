"""Session store vs the common snippet sent by hand with redis-py.

The floor for ``get`` is the snippet most apps use: GET a JSON blob + EXPIRE, pipelined, then
``orjson.loads``; ours also checks the absolute deadline, hashes the token and slides the TTL in
one script. ``update`` is compared with one HSET, ``create`` with SET EX + SADD to a user set,
``append_event`` with LPUSH + LTRIM pipelined.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns._core.scripts import load
from redispatterns.client import connect, connect_async
from redispatterns.mount import Mount
from redispatterns.session import AsyncSessionStore, SessionStore

DATA = {"user": "user:42", "cart": [101, 202, 303], "theme": "dark", "flags": {"beta": True}}
MOUNT = Mount(prefix="bench:sess:")
EVENT = {"type": "click"}
AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    store = SessionStore(c, mount=MOUNT, ttl=1800)
    lazy = SessionStore(c, mount=MOUNT, ttl=1800, refresh_below=0.5)
    plain = SessionStore(redis.Redis.from_url(url), mount=MOUNT, ttl=1800)  # no connect() policy
    token = store.create("user:42", DATA, ip="127.0.0.1")
    # a web login's meta: over 64 bytes, so Redis keeps the hash without insertion order
    real = store.create("3f2c9a1e-8b7d-4c6a-9e21-5d4b3a2f1c0e", DATA, ip="203.0.113.7", user_agent=AGENT)
    raw = redis.Redis.from_url(url)
    blob = orjson.dumps(DATA)
    raw.set("bench:naive:sess", blob, ex=1800)

    def floor_get() -> Any:
        pipe = raw.pipeline(transaction=False)
        pipe.get("bench:naive:sess")
        pipe.expire("bench:naive:sess", 1800)
        return orjson.loads(pipe.execute()[0])

    state: dict[str, Any] = {}

    async def aget() -> Any:
        if "store" not in state:
            state["store"] = AsyncSessionStore(connect_async(url), mount=MOUNT, ttl=1800)  # what users get
        return await state["store"].get(token)

    ustate: dict[str, Any] = {}  # each async case runs in its own event loop: its own clients

    async def aupdate_one() -> Any:
        if "store" not in ustate:
            ustate["store"] = AsyncSessionStore(connect_async(url), mount=MOUNT, ttl=1800)
        return await ustate["store"].update(token, {"theme": "light"})

    async def afloor_hset() -> Any:
        if "raw" not in ustate:
            ustate["raw"] = redis.asyncio.Redis.from_url(url)
        return await ustate["raw"].hset("bench:naive:h", "theme", b'"light"')

    async def afloor_get() -> Any:
        if "raw" not in state:
            state["raw"] = redis.asyncio.Redis.from_url(url)
        pipe = state["raw"].pipeline(transaction=False)
        pipe.get("bench:naive:sess")
        pipe.expire("bench:naive:sess", 1800)
        return orjson.loads((await pipe.execute())[0])

    get_script = raw.register_script(load("session_get").source)
    sid = store._cfg.id_of(token)
    keys = [f"bench:sess:sess:{{{sid}}}"]

    def floor_script() -> Any:
        return get_script(keys=keys, args=[1000])

    update_script = raw.register_script(load("session_update").source)

    def floor_update_script() -> Any:
        return update_script(keys=keys, args=["d:theme", b'"light"'])

    own: dict[str, Any] = {}  # the "vs its own script" async cases: their own clients (own loop)

    def _own(kind: str) -> tuple[Any, Any]:
        if kind not in own:
            raw_async = redis.asyncio.Redis.from_url(url)
            own[kind] = (
                AsyncSessionStore(redis.asyncio.Redis.from_url(url), mount=MOUNT, ttl=1800),
                raw_async.register_script(load(f"session_{kind}").source),
            )
        return own[kind]  # type: ignore[no-any-return]

    async def aget_own() -> Any:
        return await _own("get")[0].get(token)

    async def afloor_script() -> Any:
        return await _own("get")[1](keys=keys, args=[1000])

    async def aupdate() -> Any:
        return await _own("update")[0].update(token, {"theme": "light"})

    async def afloor_update_script() -> Any:
        return await _own("update")[1](keys=keys, args=["d:theme", b'"light"'])

    counter = iter(range(10**9))

    def floor_create() -> Any:
        pipe = raw.pipeline(transaction=False)
        sid = f"bench:naive:s{next(counter)}"
        pipe.set(sid, blob, ex=1800)
        pipe.sadd("bench:naive:user:42", sid)
        return pipe.execute()

    ev = orjson.dumps({"type": "click", "target": "#buy"})

    def floor_event() -> Any:
        pipe = raw.pipeline(transaction=False)
        pipe.lpush("bench:naive:ev", ev)
        pipe.ltrim("bench:naive:ev", 0, 99)
        return pipe.execute()

    return [
        BenchCase("session", "get (slides every read)", lambda: store.get(token), floor_get,
                  note="floor: GET blob + EXPIRE pipelined"),
        BenchCase("session", "get vs its own script by hand", lambda: store.get(token), floor_script,
                  note="floor: EVALSHA session_get, undecoded: our Python cost alone"),
        BenchCase("session", "get, plain client, vs its own script", lambda: plain.get(token), floor_script,
                  note="both on redis.Redis.from_url: our Python cost without connect()'s client policy"),
        BenchCase("session", "get async (slides every read)", aget, afloor_get, is_async=True,
                  note="ours on connect_async(); floor: GET blob + EXPIRE pipelined, plain redis.asyncio"),
        BenchCase("session", "get async vs its own script by hand", aget_own, afloor_script, is_async=True,
                  note="floor: EVALSHA session_get on a plain redis.asyncio client"),
        BenchCase("session", "get, refresh_below=0.5", lambda: lazy.get(token), floor_get,
                  note="no write while >50% of the idle TTL is left"),
        BenchCase("session", "get, web login meta (no field order)", lambda: store.get(real), floor_get,
                  note="ip + user agent: an unordered hash; the client finds the metadata by name"),
        BenchCase("session", "update one field", lambda: store.update(token, {"theme": "light"}),
                  lambda: raw.hset("bench:naive:h", "theme", b'"light"'), note="floor: one HSET"),
        BenchCase("session", "update one field async", aupdate_one, afloor_hset, is_async=True,
                  note="floor: one HSET on a plain redis.asyncio client"),
        BenchCase("session", "update vs its own script by hand",
                  lambda: store.update(token, {"theme": "light"}), floor_update_script,
                  note="floor: EVALSHA session_update: our Python cost alone"),
        BenchCase("session", "update async vs its own script by hand", aupdate, afloor_update_script,
                  is_async=True, note="floor: EVALSHA session_update on a plain redis.asyncio client"),
        BenchCase("session", "append_event (capped at 100)", lambda: store.append_event(token, EVENT),
                  floor_event, note="floor: LPUSH + LTRIM pipelined"),
        BenchCase("session", "create (indexed, 3 round trips)", lambda: store.create("user:42", DATA),
                  floor_create, note="floor: SET EX + SADD pipelined"),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
