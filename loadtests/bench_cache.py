"""@cached against its floor: a hit vs GET + orjson.loads by hand (same client), the cold-miss
path vs GET + SET by hand, write-through vs SET by hand, and a down Redis with the breaker open.
Peers (cashews, aiocache, dogpile.cache, walrus) are measured beside it when installed."""

from __future__ import annotations

import importlib
import itertools
from typing import Any, cast

import orjson
import redis
import redis.asyncio

from loadtests.harness import BenchCase, main
from redispatterns import Mount
from redispatterns.cache import CircuitBreaker, cached, write_through
from redispatterns.client import connect, connect_async

PAYLOAD = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin", "dev"],
           "score": 9.5, "active": True, "tags": {"team": "core", "tier": 3}}  # fmt: skip
FLOOR_KEY = "bench:cache:floor"


def _floor_sync(c: Any) -> Any:
    raw = cast(bytes, c.get(FLOOR_KEY))
    return orjson.loads(raw)


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    c.set(FLOOR_KEY, orjson.dumps(PAYLOAD))

    @cached(ttl=3600, client=c, name="bench.user")
    def user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    user(42)

    @cached(ttl=60, client=c, name="bench.cold")
    def cold(n: int) -> dict[str, Any]:
        return PAYLOAD

    cold_floor = _cold_floor(c)

    cold_args = itertools.count()

    @write_through(user)
    def save_user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    # a Redis that is not there: connection refused, so the breaker opens at once
    from redispatterns.testing.servers import free_port

    dead = connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    breaker = CircuitBreaker(threshold=1, reset_after=3600)

    def plain(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    down = cached(ttl=60, client=dead, breaker=breaker, name="bench.down")(plain)
    down(1)  # trips the breaker

    def acase(name: str, build: Any, *, plain: bool, key: Any = None, note: str = "") -> BenchCase:
        """An async case in its own event loop: ``build(client)`` makes the cached function once;
        the floor is GET + orjson.loads (a hit) or GET + SET EX (a miss) on a plain
        redis.asyncio client, so the pool of ``connect_async()`` shows in the ratio."""
        mine: dict[str, Any] = {}
        args = key if key is not None else (lambda: 42)

        async def call() -> Any:
            f = mine.get("f")
            if f is None:
                ac = redis.asyncio.Redis.from_url(url) if plain else connect_async(url)
                f = mine["f"] = build(ac)
            return await f(args())

        floor = _afloor(url) if key is None else _acold_floor(url)
        return BenchCase("cache", name, call, floor, is_async=True, note=note)

    def auser_of(ac: Any) -> Any:
        @cached(ttl=3600, client=ac, name="bench.user")
        async def auser(user_id: int) -> dict[str, Any]:
            return PAYLOAD

        return auser

    def acold_of(ac: Any) -> Any:
        @cached(ttl=60, client=ac, name="bench.acold")
        async def acold(n: int) -> dict[str, Any]:
            return PAYLOAD

        return acold

    acold_args = itertools.count(10**9)

    @cached(ttl=60, client=c, name="bench.tagged", tags=["user:{n}"])
    def tagged(n: int) -> dict[str, Any]:
        return PAYLOAD

    tagged_args = itertools.count(2 * 10**9)

    near_mount = Mount(prefix="benchnear:")  # its own prefix: BCAST reports every write under it

    @cached(ttl=3600, client=c, mount=near_mount, name="bench.near", near=True)
    def near_user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    def anear_of(ac: Any) -> Any:
        @cached(ttl=3600, client=ac, mount=near_mount, name="bench.near", near=True)
        async def anear(user_id: int) -> dict[str, Any]:
            return PAYLOAD

        return anear

    _warm_near(near_user)
    out = [
        BenchCase("cache", "hit: @cached (GET + envelope + decode)", lambda: user(42),
                  lambda: _floor_sync(c), note="floor: GET + orjson.loads by hand, same client"),
        acase("hit: @cached async, plain redis.asyncio client", auser_of, plain=True,
              note="floor: GET + orjson.loads on a plain redis.asyncio client (both sides)"),
        acase("hit: @cached async, connect_async() client", auser_of, plain=False,
              note="the same floor: the difference with the row above is the pool of connect_async()"),
        BenchCase("cache", "cold miss: lease script + store script", lambda: cold(next(cold_args)),
                  cold_floor, note="floor: GET (nil) + SET EX by hand; ours takes the lease"),
        acase("cold miss async, plain redis.asyncio", acold_of, plain=True, key=lambda: next(acold_args),
              note="floor: GET (nil) + SET EX on a plain redis.asyncio client"),
        acase("cold miss async, connect_async() client", acold_of, plain=False, key=lambda: next(acold_args),
              note="the same floor: ours on the client connect_async() gives"),
        BenchCase("cache", "cold miss, tagged: lease + store with its tag", lambda: tagged(next(tagged_args)),
                  cold_floor, note="floor: GET + SET EX; ours also records the tag (one batch)"),
        BenchCase("cache", "near hit: @cached(near=True), no I/O", lambda: near_user(42),
                  lambda: _floor_sync(c), note="floor: the GET + orjson.loads round trip a Redis hit costs"),
        acase("near hit async: @cached(near=True), no I/O", anear_of, plain=True),
        BenchCase("cache", "write-through: store script", lambda: save_user(42),
                  lambda: c.set("bench:cache:wt", orjson.dumps(PAYLOAD), ex=3600)),
        BenchCase("cache", "Redis down, breaker open", lambda: down(1), lambda: plain(1),
                  note="floor: the undecorated function; no socket is touched"),
    ]  # fmt: skip
    out.extend(_peers(url, c))
    return out


def _warm_near(f: Any) -> None:
    """Call ``f(42)`` until it is served locally (its invalidation link is up)."""
    import time

    deadline = time.monotonic() + 10
    while f.stats.near.hits == 0 and time.monotonic() < deadline:
        f(42)
        time.sleep(0.005)


def near_delay(url: str, n: int = 300) -> tuple[float, float]:
    """p50 / p99 ms from a write by another client to the first read that misses locally."""
    import statistics
    import time

    c, other = connect(url), connect(url)

    m = Mount(prefix="benchdelay:")

    @cached(ttl=3600, client=c, mount=m, name="bench.delay", near=True)
    def f(x: int) -> int:
        return 0

    @cached(ttl=3600, client=other, mount=m, name="bench.delay")
    def w(x: int) -> int:
        return 0

    _warm_near(f)
    delays = []
    for i in range(1, n + 1):
        f(42)
        w.set(i, 42)
        t0 = time.perf_counter()
        while f(42) != i:
            pass
        delays.append((time.perf_counter() - t0) * 1000)
    delays.sort()
    return statistics.median(delays), delays[int(0.99 * (len(delays) - 1))]


def _cold_floor(c: Any) -> Any:
    """The cold-miss floor: GET (nil) + SET EX by hand, on keys no other floor uses."""
    seq = itertools.count()
    prefix = f"bench:cache:cold:{next(_floors)}:"

    def cold_floor() -> Any:
        k = f"{prefix}{next(seq)}"
        if c.get(k) is None:
            c.set(k, orjson.dumps(PAYLOAD), ex=60)
        return PAYLOAD

    return cold_floor


_floors = itertools.count()


def _afloor(url: str) -> Any:
    """The async hit floor for one case (each case runs in its own event loop): GET + decode on
    a plain redis.asyncio client."""
    mine: dict[str, Any] = {}

    async def afloor() -> Any:
        ac = mine.get("ac")
        if ac is None:
            ac = mine["ac"] = redis.asyncio.Redis.from_url(url)
        raw = cast(bytes, await ac.get(FLOOR_KEY))
        return orjson.loads(raw)

    return afloor


def _acold_floor(url: str) -> Any:
    """The async cold-miss floor: GET (nil) + SET EX on a plain redis.asyncio client."""
    mine: dict[str, Any] = {}
    seq = itertools.count()

    async def afloor() -> Any:
        ac = mine.get("ac")
        if ac is None:
            ac = mine["ac"] = redis.asyncio.Redis.from_url(url)
        k = f"bench:cache:acold:{id(mine)}:{next(seq)}"
        if await ac.get(k) is None:
            await ac.set(k, orjson.dumps(PAYLOAD), ex=60)
        return PAYLOAD

    return afloor


def _imp(name: str) -> Any:
    """A peer library (optional; ImportError when absent)."""
    return importlib.import_module(name)


def _peers(url: str, c: Any) -> list[BenchCase]:
    out: list[BenchCase] = []
    floor = lambda: _floor_sync(c)  # noqa: E731
    try:
        region = (
            _imp("dogpile.cache")
            .make_region()
            .configure(
                "dogpile.cache.redis",
                expiration_time=3600,
                arguments={"url": url, "redis_expiration_time": 3700},
            )
        )

        def _dp_user(user_id: int) -> dict[str, Any]:
            return PAYLOAD

        dp_user: Any = region.cache_on_arguments()(_dp_user)

        dp_user(42)
        out.append(BenchCase("cache", "peer dogpile.cache hit (pickle)", lambda: dp_user(42), floor))
    except Exception as exc:  # absent or broken: skipped
        print(f"  dogpile.cache skipped: {exc!r}")
    try:
        db = _imp("walrus").Database.from_url(url)
        wc = db.cache(name="bench-walrus")

        def _w_user(user_id: int) -> dict[str, Any]:
            return PAYLOAD

        w_user: Any = wc.cached(timeout=3600)(_w_user)

        w_user(42)
        out.append(BenchCase("cache", "peer walrus hit (pickle)", lambda: w_user(42), floor))
        w_cold: Any = wc.cached(timeout=60)(_w_user)
        w_args = itertools.count(3 * 10**9)
        out.append(BenchCase("cache", "peer walrus cold miss (no stampede protection)",
                             lambda: w_cold(next(w_args)), _cold_floor(c)))  # fmt: skip
    except Exception as exc:
        print(f"  walrus skipped: {exc!r}")
    try:
        from redis.cache import CacheConfig

        csc = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
        csc.get(FLOOR_KEY)

        def csc_hit() -> Any:
            return orjson.loads(cast(bytes, csc.get(FLOOR_KEY)))

        csc_hit()
        out.append(BenchCase("cache", "peer redis-py CacheConfig hit (RESP3, sync only)", csc_hit, floor))
    except Exception as exc:
        print(f"  redis-py CacheConfig skipped: {exc!r}")
    state: dict[str, Any] = {}

    try:
        Cache = _imp("cashews").Cache

        async def cashews_hit() -> Any:
            f = state.get("cashews")
            if f is None:
                cache = Cache()
                cache.setup(url)

                async def _cw_user(user_id: int) -> dict[str, Any]:
                    return PAYLOAD

                cw_user: Any = cache(ttl=3600)(_cw_user)

                f = state["cashews"] = cw_user
            return await f(42)

        out.append(BenchCase("cache", "peer cashews hit (pickle)", cashews_hit, _afloor(url), is_async=True))
    except Exception as exc:
        print(f"  cashews skipped: {exc!r}")
    try:
        aiocache = _imp("aiocache")
        ai_cached = aiocache.cached
        JsonSerializer = _imp("aiocache.serializers").JsonSerializer

        async def aiocache_hit() -> Any:
            f = state.get("aiocache")
            if f is None:
                RedisCache = aiocache.RedisCache
                port = int(url.rsplit(":", 1)[1].split("/")[0])

                async def ai_user(user_id: int) -> dict[str, Any]:
                    return PAYLOAD

                deco = ai_cached(cache=RedisCache, endpoint="127.0.0.1", port=port, ttl=3600,
                                 serializer=JsonSerializer())  # fmt: skip
                f = state["aiocache"] = deco(ai_user)
            return await f(42)

        out.append(BenchCase("cache", "peer aiocache hit (json)", aiocache_hit, _afloor(url), is_async=True))
    except Exception as exc:
        print(f"  aiocache skipped: {exc!r}")
    return out


class _StubClient(redis.Redis):
    """A sync client that never opens its socket: ``GET`` and the lease (``SET … NX … GET``)
    return the stored envelope for the hot key, else nil (the lease granted); a store script
    writes (1)."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def execute_command(self, *args: Any, **kw: Any) -> Any:
        if args[0] not in ("GET", "SET"):
            return 1
        key = args[1]  # keys go as bytes (encoded once)
        if (key.decode() if isinstance(key, bytes) else key).endswith(":i42"):
            return self.raw
        return None


def _per_call(fn: Any, n: int = 20_000, *, wall: bool = False) -> float:
    """µs per call of ``fn``: the fastest of 5 runs of ``n`` calls, in this thread's CPU time
    (what a busy machine disturbs least; it leaves out time spent waiting on the server), or
    in wall time with ``wall=True``."""
    import time

    clock = time.perf_counter if wall else time.thread_time
    runs = []
    for _ in range(5):
        t0 = clock()
        for _ in range(n):
            fn()
        runs.append((clock() - t0) / n * 1e6)
    return min(runs)


def profile(url: str) -> None:
    """Where a hit's and a cold miss's microseconds go, layer by layer (sync; µs per call, each
    layer measured alone, the socket-free layers on a stub client)."""
    from redispatterns import _runner
    from redispatterns._core import cache as core

    c = connect(url)
    c.set(FLOOR_KEY, orjson.dumps(PAYLOAD))

    @cached(ttl=3600, client=c, name="bench.profile")
    def user(user_id: int) -> dict[str, Any]:
        return PAYLOAD

    user(42)
    user(42)
    h = cast(Any, user)._rp_cache
    spec, breaker, flights = h.spec, h.breaker, h.flights
    raw = cast(bytes, c.get(user.key(42)))
    stub = _StubClient(raw)
    keys = spec.keys_for((42,), {})
    fn = cast(Any, user).original

    def flow_alone() -> Any:  # the flow driven by hand: no runner, no client
        flow = core.call(spec, keys, fn, (42,), {}, breaker, core_rand, wallclock, flights)
        next(flow)
        try:
            flow.send(raw)
        except StopIteration as stop:
            return stop.value

    import random
    import time

    core_rand, wallclock = random.random, time.time
    stub_user = cached(ttl=3600, client=stub, name="bench.profile")(fn)
    stub_user(42)
    rows = {
        "key building (keys_for, memoised)": _per_call(lambda: spec.keys_for((42,), {})),
        "key building (a new argument)": _per_call(lambda: spec.keys_bound({"user_id": 42})),
        "codec (envelope + orjson)": _per_call(lambda: core._read(raw, spec.codec)),
        "flow + ops + codec (driven by hand)": _per_call(flow_alone),
        "runner dispatch + flow (run_sync, stub client)": _per_call(
            lambda: _runner.run_sync(
                stub, core.call(spec, keys, fn, (42,), {}, breaker, core_rand, wallclock, flights)
            )
        ),
        "whole wrapper, stub client": _per_call(lambda: stub_user(42)),
        "whole wrapper, real server (client CPU)": _per_call(lambda: user(42), 3000),
        "floor: GET + orjson.loads (client CPU)": _per_call(
            lambda: orjson.loads(cast(bytes, c.get(FLOOR_KEY))), 3000
        ),
        "whole wrapper, real server (wall)": _per_call(lambda: user(42), 3000, wall=True),
        "floor: GET + orjson.loads (wall)": _per_call(
            lambda: orjson.loads(cast(bytes, c.get(FLOOR_KEY))), 3000, wall=True
        ),
    }
    seq = itertools.count(10**6)
    stub_cold = cached(ttl=60, client=stub, name="bench.profile_cold")(fn)
    cold_real = cached(ttl=60, client=c, name="bench.profile_cold")(fn)
    cold_keys = cast(Any, stub_cold)._rp_cache.spec
    rows.update(
        {
            "miss: key building (new argument)": _per_call(lambda: cold_keys.keys_for((next(seq),), {})),
            "miss: lease op construction": _per_call(
                lambda: core.lease_op(cold_keys, keys, core.new_token())
            ),
            "miss: whole wrapper, stub client (2 ops + Coalesce + compute)": _per_call(
                lambda: stub_cold(next(seq))
            ),
            "miss: whole wrapper, real server (client CPU)": _per_call(lambda: cold_real(next(seq)), 3000),
            "miss floor: GET + SET EX (client CPU)": _per_call(_cold_floor(c), 3000),
            "miss: whole wrapper, real server (wall)": _per_call(
                lambda: cold_real(next(seq)), 3000, wall=True
            ),
            "miss floor: GET + SET EX (wall)": _per_call(_cold_floor(c), 3000, wall=True),
        }
    )
    c.config_resetstat()
    for _ in range(2000):
        user(42)
        cold_real(next(seq))
    stats = c.info("commandstats")
    for cmd in ("get", "evalsha", "set"):
        st = stats.get(f"cmdstat_{cmd}")
        if st:
            rows[f"server: {cmd.upper()} usec_per_call (INFO commandstats)"] = float(st["usec_per_call"])
    p50, p99 = near_delay(url)
    rows["near: invalidation delay p50 (ms, write elsewhere -> local miss)"] = p50
    rows["near: invalidation delay p99 (ms)"] = p99
    width = max(map(len, rows))
    for name, us in rows.items():
        print(f"{name:<{width}}  {us:8.2f} {'ms' if '(ms' in name else 'µs'}")


if __name__ == "__main__":
    import os
    import sys

    if "--profile" in sys.argv:
        from loadtests.harness import private_server

        if os.environ.get("REDIS_URL"):
            profile(os.environ["REDIS_URL"])
        else:
            with private_server() as url:
                profile(url)
        sys.exit(0)
    sys.exit(main([sys.modules[__name__]]))
