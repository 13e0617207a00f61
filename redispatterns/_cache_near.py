"""``@cached(near=...)``: a process-local tier in front of Redis. Lookups and fills are
:class:`~redispatterns._core.near.NearStore` calls; coherence comes from the invalidation links of
:mod:`redispatterns._tracking` (a local entry is served only while every link is up, and a gap
flushes the tier). Fills happen only after a *fresh* read from Redis, and a read that an
invalidation overtook is never kept. A local hit decodes the stored bytes again, so what a caller
gets is its own object (safe to mutate), for about a microsecond of decoding."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from ._cache_handle import Handle, log, rand
from ._core import cache as core
from ._core.near import compact
from ._runner import monotonic, run_async, run_sync, start_loop_async, wallclock
from ._tracking import near_store, trackable, tracking_for

__all__ = ["NEAR_BYTES", "NEAR_ENTRIES", "decorate_near"]

NOT_CACHED = core.NOT_FOUND


NEAR_ENTRIES = 10_000
NEAR_BYTES = 64 * 1024 * 1024


def decorate_near(h: Handle, entries: int, plain: Callable[[Handle], Any]) -> Any:
    """The wrapper with a near tier: the plain wrapper's call between a local lookup (a hit
    returns with no I/O) and a local fill after a fresh read from Redis; ``plain(h)`` when the
    client cannot be tracked."""
    fn, spec, ns, breaker = h.fn, h.spec, h.ns, h.breaker
    if not trackable(ns.client):
        log.warning(
            "%s: near= needs a server that sends invalidations (not fakeredis or TLS): off", spec.plan.fn_id
        )
        return plain(h)
    store = near_store(entries, NEAR_BYTES)
    h.stats.near = store.stats
    h.near = store
    prefix = f"{spec.keyspace.prefix}cache:"
    link: list[Any] = [None]
    keys_for, record, call, flights_ = spec.keys_for, h.record, core.call, h.flights
    codec, present, HIT = spec.codec, spec.present, core.HIT
    clock, mono = wallclock, monotonic

    def lookup(key: str) -> tuple[Any, Any]:
        """``(value, None)`` on a local hit, else ``(NOT_FOUND, ticket or None)``."""
        t = link[0]
        if t is None:
            t = link[0] = tracking_for(ns.client, (prefix,))
            if t is None:
                return NOT_CACHED, None
            t.register(store)
        if not t.healthy:
            return NOT_CACHED, None
        now = mono()
        if t.quiet(now):  # no invalidation waiting to be applied
            raw = store.get(key, now)
            if raw is not None:
                return codec.decode(raw), None
        return NOT_CACHED, store.begin(key)

    def keep(ticket: Any, key: str, value: Any, outcome: str) -> None:
        until = present.get(key)
        raw = None
        if outcome is HIT and until is not None and link[0] is not None and link[0].healthy:
            try:
                raw = compact(codec.encode(value))
            except (TypeError, ValueError):
                raw = None
        store.finish(ticket, raw, mono() + (until or 0.0) - clock())

    if h.is_async:

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            keys = keys_for(args, kwargs)
            value, ticket = lookup(keys.value)
            if value is not NOT_CACHED:
                return value
            client = ns.client
            leases: list[str] = []
            flow = call(spec, keys, fn, args, kwargs, breaker, rand, clock, flights_, leases)
            try:
                value, outcome = await run_async(client, flow)
            except BaseException as exc:
                if ticket is not None:
                    store.finish(ticket, None, 0.0)
                if isinstance(exc, asyncio.CancelledError):
                    for token in leases:
                        start_loop_async(client, core.release(keys, token), name="rp-cache-release")
                raise
            if ticket is not None:
                keep(ticket, keys.value, value, outcome)
            record(outcome, keys.value)
            return value

        return awrapper

    @functools.wraps(fn)
    def swrapper(*args: Any, **kwargs: Any) -> Any:
        keys = keys_for(args, kwargs)
        value, ticket = lookup(keys.value)
        if value is not NOT_CACHED:
            return value
        try:
            value, outcome = run_sync(
                ns.client, call(spec, keys, fn, args, kwargs, breaker, rand, clock, flights_)
            )
        except BaseException:
            if ticket is not None:
                store.finish(ticket, None, 0.0)
            raise
        if ticket is not None:
            keep(ticket, keys.value, value, outcome)
        record(outcome, keys.value)
        return value

    return swrapper
