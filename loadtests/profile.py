"""``make bench BENCH_ARGS=--profile``: where a hot path's microseconds go, by layer.

Each case runs again under ``cProfile``; every function's own time (``tottime``) is attributed to
the layer its code lives in (argument validation, key building, codec, core flow, shell, runner,
redis-py, the parser, the socket and the event loop), and the shares are scaled to the case's
measured median (profiling slows Python code down, so shares are honest, raw times are not).
The server's side is read from ``INFO commandstats`` (µs of server CPU per call) around the run.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis

__all__ = ["LAYERS", "aprofile_case", "by_layer", "format_profile", "layer_of", "profile_case", "server_usec"]

LAYERS = ("validation", "keys", "codec", "flow", "shell", "runner", "redis-py", "parser", "socket",
          "event loop", "other")  # fmt: skip

_RULES: tuple[tuple[str, str], ...] = (
    ("redispatterns/_core/validate", "validation"),
    ("redispatterns/_core/keys", "keys"),
    ("redispatterns/_core/cachekey", "keys"),
    ("redispatterns/_core/mount", "keys"),
    ("redispatterns/_core/codec", "codec"),
    ("redispatterns/_core/", "flow"),
    ("redispatterns/_runner", "runner"),
    ("redispatterns/_links", "runner"),
    ("redispatterns/client", "runner"),
    ("redispatterns/_compat", "runner"),
    ("redispatterns/_pools", "runner"),
    ("redispatterns/_loops", "runner"),
    ("redispatterns/", "shell"),
    ("redis/_parsers", "parser"),
    ("redis/", "redis-py"),
    ("asyncio/", "event loop"),
    ("selectors", "event loop"),
)
_BUILTINS: tuple[tuple[str, str], ...] = (
    ("orjson", "codec"),
    ("'loads'", "codec"),
    ("'dumps'", "codec"),
    ("hiredis", "parser"),
    ("'gets'", "parser"),
    ("'feed'", "parser"),
    ("socket", "socket"),
    ("'sendall'", "socket"),
    ("'recv", "socket"),
    ("'send'", "socket"),
    ("select", "event loop"),
    ("'poll'", "event loop"),
    ("epoll", "event loop"),
)


def layer_of(filename: str, funcname: str) -> str:
    """The layer a profiled function belongs to (``filename`` is ``~`` for builtins)."""
    path = filename.replace("\\", "/")
    if path == "~":
        for needle, layer in _BUILTINS:
            if needle in funcname:
                return layer
        return "other"
    for needle, layer in _RULES:
        if needle in path:
            return layer
    return "other"


def server_usec(url: str) -> float:
    """Total µs of server CPU spent in commands so far (``INFO commandstats``)."""
    with redis.Redis.from_url(url) as c:
        stats = c.info("commandstats")
    return float(sum(v.get("usec", 0) for v in stats.values() if isinstance(v, dict)))


def by_layer(prof: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time per layer; a builtin that names no layer (``len``, ``dict.get``...)
    is charged to the layers of its callers, in proportion to the time each call edge took."""
    totals = dict.fromkeys(LAYERS, 0.0)
    stats: Any = cast(Any, pstats.Stats(prof)).stats
    for (filename, _line, funcname), (_cc, _nc, tottime, _ct, callers) in stats.items():
        layer = layer_of(filename, funcname)
        if layer != "other" or filename != "~" or not callers:
            totals[layer] += tottime
            continue
        edge_total = sum(edge[2] for edge in callers.values()) or 1.0
        for (cfile, _cline, cfunc), edge in callers.items():
            totals[layer_of(cfile, cfunc)] += tottime * edge[2] / edge_total
    return totals


def scale(totals: dict[str, float], median_us: float, server: float) -> dict[str, float]:
    """Shares of the profiled time, in µs of the measured median; ``server``: CPU µs per call."""
    whole = sum(totals.values()) or 1.0
    out = {layer: round(median_us * t / whole, 2) for layer, t in totals.items() if t}
    out["server"] = round(server, 2)
    return out


def profile_case(call: Callable[[], Any], median_us: float, url: str, calls: int = 2000) -> dict[str, float]:
    """µs per call by layer for a sync call (scaled to ``median_us``), plus ``server``."""
    prof = cProfile.Profile()
    before = server_usec(url)
    prof.enable()
    try:
        for _ in range(calls):
            call()
    finally:
        prof.disable()
    return scale(by_layer(prof), median_us, (server_usec(url) - before) / calls)


async def aprofile_case(
    call: Callable[[], Awaitable[Any]], median_us: float, url: str, calls: int = 2000
) -> dict[str, float]:
    """The asyncio twin of :func:`profile_case`, run in the loop the case was measured in (its
    clients belong to it); the server counters are read off the loop, in a thread."""
    prof = cProfile.Profile()
    before = await asyncio.to_thread(server_usec, url)
    prof.enable()
    try:
        for _ in range(calls):
            await call()
    finally:
        prof.disable()
    server = (await asyncio.to_thread(server_usec, url) - before) / calls
    return scale(by_layer(prof), median_us, server)


def format_profile(profile: dict[str, float]) -> str:
    """One line: the layers in a fixed order, biggest first within the client, then the server."""
    parts = [f"{layer} {profile[layer]:.1f}" for layer in LAYERS if profile.get(layer)]
    return "µs/call: " + " | ".join(parts) + f" || server CPU {profile.get('server', 0.0):.1f}"
