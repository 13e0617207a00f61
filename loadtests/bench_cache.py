"""@cached against its floor: a hit vs GET + orjson.loads by hand (same client), the cold-miss
path vs GET + SET by hand, write-through vs SET by hand, and a down Redis with the breaker open.
Peers (cashews, aiocache, dogpile.cache, walrus) are measured beside it when installed."""

from __future__ import annotations

import importlib
import itertools
from typing import Any, cast

import orjson

from loadtests.harness import BenchCase, main
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
    seq = itertools.count()

    @cached(ttl=60, client=c, name="bench.cold")
    def cold(n: int) -> dict[str, Any]:
        return PAYLOAD

    def cold_floor() -> Any:
        k = f"bench:cache:cold:{next(seq)}"
        if c.get(k) is None:
            c.set(k, orjson.dumps(PAYLOAD), ex=60)
        return PAYLOAD

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

    state: dict[str, Any] = {}

    async def ahit() -> Any:
        f = state.get("ahit")
        if f is None:
            ac = connect_async(url)

            @cached(ttl=3600, client=ac, name="bench.user")
            async def auser(user_id: int) -> dict[str, Any]:
                return PAYLOAD

            f = state["ahit"] = auser
            state["ac"] = ac
        return await f(42)

    async def afloor() -> Any:
        ac = state.get("ac") or connect_async(url)
        state["ac"] = ac
        raw = cast(bytes, await ac.get(FLOOR_KEY))
        return orjson.loads(raw)

    out = [
        BenchCase("cache", "hit: @cached (GET + envelope + decode)", lambda: user(42),
                  lambda: _floor_sync(c), note="floor: GET + orjson.loads by hand, same client"),
        BenchCase("cache", "hit: @cached async", ahit, afloor, is_async=True),
        BenchCase("cache", "cold miss: GET, lease script, store script", lambda: cold(next(cold_args)),
                  cold_floor, note="floor: GET (nil) + SET EX by hand; ours adds the lease (stampede-proof)"),
        BenchCase("cache", "write-through: store script", lambda: save_user(42),
                  lambda: c.set("bench:cache:wt", orjson.dumps(PAYLOAD), ex=3600)),
        BenchCase("cache", "Redis down, breaker open", lambda: down(1), lambda: plain(1),
                  note="floor: the undecorated function; no socket is touched"),
    ]  # fmt: skip
    out.extend(_peers(url, c))
    return out


def _afloor(url: str) -> Any:
    """The async floor for one case (each case runs in its own event loop)."""
    mine: dict[str, Any] = {}

    async def afloor() -> Any:
        ac = mine.get("ac")
        if ac is None:
            ac = mine["ac"] = connect_async(url)
        raw = cast(bytes, await ac.get(FLOOR_KEY))
        return orjson.loads(raw)

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
    except Exception as exc:
        print(f"  walrus skipped: {exc!r}")
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


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
