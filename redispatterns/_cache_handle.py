"""What a ``@cached`` function carries at run time: its spec, namespace, breaker, stats, hooks,
its logger, and the background repair of entries a failed write-through left stale."""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._core import cache as core
from ._core.breaker import OPEN, CircuitBreaker
from ._core.near import NearStats, NearStore
from ._core.ops import Compute, Flow
from ._runner import flights, run_async, run_sync, start_loop, start_loop_async
from .mount import Namespace

__all__ = ["CacheStats", "EventHook", "Handle", "log"]

T = TypeVar("T")
log = logging.getLogger("redispatterns.cache")
rand = random.random
EventHook = Callable[[str, str], None]


class CacheStats:
    """Counters of one cached function: outcomes of calls, plus the breaker's state."""

    __slots__ = ("_breaker", "counts", "near")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self.near: NearStats | None = None
        """The near tier's counters (``near=``): hits served with no I/O, invalidations, ..."""
        self.counts: dict[str, int] = dict.fromkeys(
            (core.HIT, core.MISS, core.STALE, core.REFRESHED, core.STALE_ERROR, core.BYPASS,
             core.ERROR, core.UNCACHED, core.UNENCODABLE, core.UNDECODABLE, "coalesced"),
            0,
        )  # fmt: skip

    hits = property(lambda self: self.counts[core.HIT] + self.counts["coalesced"])
    misses = property(lambda self: self.counts[core.MISS] + self.counts[core.UNCACHED])
    stale = property(lambda self: self.counts[core.STALE] + self.counts[core.STALE_ERROR])
    errors = property(lambda self: self.counts[core.ERROR])
    bypassed = property(lambda self: self.counts[core.BYPASS])
    corrupt = property(lambda self: self.counts[core.UNDECODABLE])
    """Values found under a key that were not ours or no longer decoded (then replaced)."""

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def reset(self) -> None:
        for k in self.counts:
            self.counts[k] = 0

    def __repr__(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.counts.items() if v)
        near = "" if self.near is None else f" near_hits={self.near.hits} near_entries={self.near.entries}"
        return f"<CacheStats {shown or 'empty'} breaker={self._breaker.state}{near}>"


class Handle:
    """The state behind one cached function (its methods return a value, or an awaitable of it
    for ``async def``)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        spec: core.CacheSpec,
        ns: Namespace,
        breaker: CircuitBreaker,
        on_event: EventHook | None,
    ) -> None:
        self.fn = fn
        self.spec = spec
        self.ns = ns
        self.is_async = ns.asyncio
        self.breaker = breaker
        self.stats = CacheStats(breaker)
        self.on_event = on_event
        self.flights = flights(ns.asyncio)
        self._trips = 0
        self._corrupt = 0  # spec.corrupt already counted in stats (and logged once)
        self.repairs: dict[str, core.CallKeys] = {}  # entries a failed write-through left stale
        self.near: NearStore | None = None  # the process-local tier (near=)
        self._repairer: Any = None

    def remember_stale(self, keys: core.CallKeys) -> None:
        """A write-through failed after its write succeeded: the entry may be older than the
        database. A background loop invalidates it as soon as Redis answers again."""
        if keys.value not in self.repairs and len(self.repairs) >= core.MAX_REPAIRS:
            self.repairs.pop(next(iter(self.repairs)), None)
        self.repairs[keys.value] = keys
        if self._repairer is None or self._repairer.stopped:
            flow = core.repair(self.spec, self.repairs)
            name = f"rp-cache-repair:{self.spec.plan.fn_id}"
            start = start_loop_async if self.is_async else start_loop
            self._repairer = start(self.ns.client, flow, name=name)

    def run(self, flow: Flow[T]) -> Any:
        """Run a flow: its result (sync) or an awaitable of it (asyncio)."""
        if self.is_async:
            return run_async(self.ns.client, flow)
        return run_sync(self.ns.client, flow)

    def record(self, outcome: str, key: str) -> None:
        self.stats.counts[outcome] += 1
        if outcome is not core.HIT and (  # a plain miss has nothing to log: no call for it
            outcome is not core.MISS
            or self.spec.corrupt != self._corrupt
            or self.breaker.trips != self._trips
        ):
            self._notable(outcome, key)
        if self.on_event is not None:
            self.hook(outcome, key)

    def hook(self, outcome: str, key: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(outcome, key)
            except Exception:  # a metrics hook never breaks the call
                log.exception("cache on_event hook raised")

    def _notable(self, outcome: str, key: str) -> None:
        fn_id = self.spec.plan.fn_id
        if outcome == core.UNENCODABLE:
            msg = f"{fn_id}: result not cached, the codec cannot encode it ({key})"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
        elif outcome == core.STALE_ERROR:
            log.warning("%s: refresh raised; served the stale value of %s", fn_id, key)
        elif outcome == core.ERROR:
            log.warning(
                "%s: Redis failed (%r); returned the result uncached (%s)",
                fn_id,
                self.breaker.last_error,
                key,
            )
        corrupt = self.spec.corrupt
        if corrupt != self._corrupt:
            if not self._corrupt:
                log.warning(
                    "%s: the value under %s was not a cache entry of ours (another type, a foreign "
                    "or undecodable value): treated as absent and overwritten; logged once, "
                    "counted in stats.corrupt",
                    fn_id,
                    key,
                )
            self.stats.counts[core.UNDECODABLE] += corrupt - self._corrupt
            self._corrupt = corrupt
        if self.breaker.trips != self._trips and self.breaker.state == OPEN:
            self._trips = self.breaker.trips
            log.error(
                "cache breaker open after %d failures: skipping Redis for %.1fs",
                self.breaker.threshold,
                self.breaker.reset_after,
            )
            self.hook("breaker_open", key)

    def keys(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> core.CallKeys:
        return self.spec.keys_for(args, kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        self.ns.check_write("invalidate")
        keys = self.keys(args, kwargs)
        if self.near is not None:  # at once here; other processes hear it from the server
            self.near.drop([keys.value])
        return self.run(core.invalidate(self.spec, keys))

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(core.peek(self.spec, self.keys(args, kwargs)))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        self.ns.check_write("refresh")
        keys = self.keys(args, kwargs)
        call = Compute(self.fn, args, kwargs)
        return self.run(core.refresh(self.spec, keys, call, self.breaker, rand))

    def set(self, value: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Store ``value`` as the result for these arguments (write-through by hand)."""
        self.ns.check_write("set")
        return self.run(core.put(self.spec, self.keys(args, kwargs), value, 0, self.breaker, rand))

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.keys(args, kwargs).value
