"""Cache-aside (``@cached``) and write-through (``@write_through``), for ``def`` and ``async def``.

>>> @rp.cached(ttl=300, tags=["user:{user_id}"])
... def get_user(user_id: int) -> dict: ...

A hit is one ``GET``. Misses are stampede-proof: one computation per key per process
(single-flight), one per key across processes (a short lease in Redis, others wait for the
value), stale-while-revalidate after the soft TTL, and XFetch early refresh. Redis errors fail
open behind a circuit breaker. The logic is in :mod:`redispatterns._core.cache` (one flow per
call, the single-flight a ``Coalesce`` op the runner executes); this module only runs its flows.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast, overload

from ._core import cache as core
from ._core import validate
from ._core.breaker import OPEN, CircuitBreaker
from ._core.cachekey import KeyPlan
from ._core.mount import Mount
from ._core.ops import Compute, Flow
from ._runner import flights, run_async, run_sync, start_loop, start_loop_async, wallclock
from .client import is_async_client
from .mount import Namespace, resolve

__all__ = [
    "CacheStats",
    "CircuitBreaker",
    "NOT_CACHED",
    "cached",
    "invalidate_tags",
    "write_through",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

log = logging.getLogger("redispatterns.cache")

NOT_CACHED: Any = core.NOT_FOUND
"""What ``fn.peek(...)`` returns when nothing (decodable) is cached for those arguments."""

_rand = random.random
EventHook = Callable[[str, str], None]


class CacheStats:
    """Counters of one cached function: outcomes of calls, plus the breaker's state."""

    __slots__ = ("_breaker", "counts")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
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

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def reset(self) -> None:
        for k in self.counts:
            self.counts[k] = 0

    def __repr__(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.counts.items() if v)
        return f"<CacheStats {shown or 'empty'} breaker={self._breaker.state}>"


# --------------------------------------------------------------------------- the handle


class _Handle:
    """What a cached function carries: its spec, namespace, breaker, stats and hooks."""

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
        self.repairs: dict[str, core.CallKeys] = {}  # entries a failed write-through left stale
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
        if outcome is not core.HIT:
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
        if outcome == core.UNENCODABLE:
            msg = f"{self.spec.plan.fn_id}: result not cached, the codec cannot encode it ({key})"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
        elif outcome == core.STALE_ERROR:
            log.warning("%s: refresh raised; served the stale value of %s", self.spec.plan.fn_id, key)
        elif outcome == core.ERROR:
            log.warning(
                "%s: Redis failed (%r); returned the result uncached (%s)",
                self.spec.plan.fn_id,
                self.breaker.last_error,
                key,
            )
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

    # handles: each returns a value (sync) or an awaitable (async)
    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        self.ns.check_write("invalidate")
        return self.run(core.invalidate(self.spec, self.keys(args, kwargs)))

    def peek(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(core.peek(self.spec, self.keys(args, kwargs)))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        self.ns.check_write("refresh")
        keys = self.keys(args, kwargs)
        call = Compute(self.fn, args, kwargs)
        return self.run(core.refresh(self.spec, keys, call, self.breaker, _rand))

    def set(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        """Store ``value`` as the result for these arguments (write-through by hand)."""
        self.ns.check_write("set")
        return self.run(core.put(self.spec, self.keys(args, kwargs), value, 0, self.breaker, _rand))

    def key(self, *args: Any, **kwargs: Any) -> str:
        return self.keys(args, kwargs).value


@overload
def cached(fn: F, /) -> F: ...


@overload
def cached(
    fn: None = None,
    /,
    *,
    ttl: float | Callable[[Any], float | None] | None = None,
    key: str | None = None,
    ignore: Iterable[str] = (),
    tags: Iterable[str] = (),
    name: str | None = None,
    version: int | str = 1,
    condition: Callable[[Any], bool] | None = None,
    jitter: float = 0.1,
    stale_ttl: float | None = None,
    lock_ttl: float = 10.0,
    lock_wait: float | None = None,
    early_refresh: float = 1.0,
    stale_if_error: bool = True,
    mount: Mount | Namespace | None = None,
    client: Any = None,
    breaker: CircuitBreaker | None = None,
    on_event: EventHook | None = None,
) -> Callable[[F], F]: ...


def cached(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    ttl: float | Callable[[Any], float | None] | None = None,
    key: str | None = None,
    ignore: Iterable[str] = (),
    tags: Iterable[str] = (),
    name: str | None = None,
    version: int | str = 1,
    condition: Callable[[Any], bool] | None = None,
    jitter: float = 0.1,
    stale_ttl: float | None = None,
    lock_ttl: float = 10.0,
    lock_wait: float | None = None,
    early_refresh: float = 1.0,
    stale_if_error: bool = True,
    mount: Mount | Namespace | None = None,
    client: Any = None,
    breaker: CircuitBreaker | None = None,
    on_event: EventHook | None = None,
) -> Any:
    """Cache a function's results in Redis (``def`` or ``async def``; one decorator).

    ``ttl``: seconds a value is fresh (a number, or a callable of the result returning seconds,
    or ``None``/0 for "don't cache"); default: the mount's TTL. ``key``: a template over the
    parameters (``"user:{user_id}"``), checked now; default: every parameter, encoded stably.
    ``ignore``: parameters left out of the key (``self``/``cls`` always are). ``tags``: templates
    for :func:`invalidate_tags`. ``version``: bump it to orphan every old entry. ``condition``:
    store only when ``condition(result)`` is true (``None`` results are cached by default).
    ``jitter``: the soft TTL is shortened by up to this fraction at random. ``stale_ttl``: how
    long a stale value stays servable after the soft TTL (default 10%, at least 1 s).
    ``lock_ttl``/``lock_wait``: the cold-miss lease and how long others wait for its value.
    ``early_refresh``: XFetch's beta (0 turns it off). ``stale_if_error``: serve the stale
    value when a refresh raises. ``breaker``: share a :class:`CircuitBreaker` between functions.
    ``on_event(outcome, key)``: a hook for metrics (hit, miss, stale, refreshed, error, ...).

    The wrapper carries ``.invalidate(*a, **kw)``, ``.refresh(...)``, ``.peek(...)`` (the value
    or ``NOT_CACHED``), ``.set(value, *a, **kw)`` (awaitable for ``async def``), ``.key(...)``
    and ``.stats``.
    """
    options = {
        "ttl": ttl, "key": key, "ignore": ignore, "tags": tags, "name": name, "version": version,
        "condition": condition, "jitter": jitter, "stale_ttl": stale_ttl, "lock_ttl": lock_ttl,
        "lock_wait": lock_wait, "early_refresh": early_refresh, "stale_if_error": stale_if_error,
        "mount": mount, "client": client, "breaker": breaker, "on_event": on_event,
    }  # fmt: skip
    _validate(options)
    if fn is None:
        return lambda f: _decorate(f, options)
    return _decorate(fn, options)


def _validate(o: dict[str, Any]) -> None:
    ttl = o["ttl"]
    if ttl is not None and not callable(ttl):
        validate.seconds(ttl, "ttl")
    validate.fraction(o["jitter"], "jitter (a fraction of the TTL)", one_ok=False)
    validate.optional_seconds(o["stale_ttl"], "stale_ttl", zero_ok=True)
    validate.seconds(o["lock_ttl"], "lock_ttl")
    validate.optional_seconds(o["lock_wait"], "lock_wait", zero_ok=True)
    validate.seconds(o["early_refresh"], "early_refresh", zero_ok=True)
    validate.callable_or_none(o["condition"], "condition=", "taking the result")
    validate.callable_or_none(o["on_event"], "on_event=", "(outcome, key)")
    if o["breaker"] is not None and not isinstance(o["breaker"], CircuitBreaker):
        raise TypeError("breaker= must be a redispatterns.CircuitBreaker")
    v = o["version"]
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not v):
        raise TypeError("version= must be an int or a non-empty str")


def _decorate(fn: Callable[..., Any], o: dict[str, Any]) -> Any:
    if not callable(fn):
        raise TypeError(f"@cached decorates a function, not {type(fn).__name__}")
    if isinstance(fn, (staticmethod, classmethod)):
        raise TypeError("put @cached below @staticmethod/@classmethod, on the plain function")
    is_async = validate.is_async_callable(fn)
    ns = resolve(o["mount"], o["client"], asyncio=is_async)
    ns.check_read("@cached")
    ttl = o["ttl"] if o["ttl"] is not None else ns.ttl
    if ttl is None:
        raise ValueError(
            f"@cached on {fn.__qualname__} needs a TTL: pass ttl=seconds or use a mount with ttl="
        )
    plan = KeyPlan.for_function(fn, template=o["key"], ignore=o["ignore"], tags=o["tags"], name=o["name"])
    spec = core.CacheSpec(
        keyspace=ns.keyspace,
        plan=plan,
        codec=ns.mount.codec,
        ttl=ttl,
        version=str(o["version"]),
        stale_ttl=o["stale_ttl"],
        jitter=float(o["jitter"]),
        lock_ttl=float(o["lock_ttl"]),
        lock_wait=o["lock_wait"],
        beta=float(o["early_refresh"]),
        stale_if_error=bool(o["stale_if_error"]),
        condition=o["condition"],
        can_write=ns.mount.can_write,
    )
    breaker = o["breaker"] if o["breaker"] is not None else CircuitBreaker()
    h = _Handle(fn, spec, ns, breaker, o["on_event"])
    keys_for, record, call, flights_ = spec.keys_for, h.record, core.call, h.flights
    HIT = core.HIT
    counts = h.stats.counts
    rand, clock = _rand, wallclock

    if is_async:

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            keys = keys_for(args, kwargs)
            client = ns.client
            leases: list[str] = []
            flow = call(spec, keys, fn, args, kwargs, breaker, rand, clock, flights_, leases)
            try:
                value, outcome = await run_async(client, flow)
            except asyncio.CancelledError:  # don't leave others waiting out our lease
                for token in leases:
                    start_loop_async(client, core.release(keys, token), name="rp-cache-release")
                raise
            if outcome is HIT:
                counts[HIT] += 1
                if h.on_event is not None:
                    h.hook(HIT, keys.value)
            else:
                record(outcome, keys.value)
            return value

        wrapper: Any = awrapper
    else:

        @functools.wraps(fn)
        def swrapper(*args: Any, **kwargs: Any) -> Any:
            keys = keys_for(args, kwargs)
            value, outcome = run_sync(
                ns.client, call(spec, keys, fn, args, kwargs, breaker, rand, clock, flights_)
            )
            if outcome is HIT:
                counts[HIT] += 1
                if h.on_event is not None:
                    h.hook(HIT, keys.value)
            else:
                record(outcome, keys.value)
            return value

        wrapper = swrapper

    wrapper.invalidate = h.invalidate
    wrapper.peek = h.peek
    wrapper.refresh = h.refresh
    wrapper.set = h.set
    wrapper.key = h.key
    wrapper.stats = h.stats
    wrapper.breaker = breaker
    wrapper.original = fn
    wrapper._rp_cache = h
    return wrapper


# --------------------------------------------------------------------------- write-through


def write_through(
    target: Callable[..., Any],
    *,
    args: Mapping[str, str] | Callable[..., Mapping[str, Any]] | None = None,
    value: Callable[[Any], Any] | None = None,
    version: Callable[[Any], int] | None = None,
    mode: str = "update",
) -> Callable[[F], F]:
    """After the decorated write succeeds, ``target``'s cached entry holds the new value.

    ``target`` is a ``@cached`` function. Its arguments are taken by name from the write's
    arguments; ``args={"user_id": "uid"}`` renames (cached parameter -> write parameter), or a
    callable gets the write's arguments as keywords and returns the cached function's.
    ``value(result)`` turns the write's return value into the cached value (default: as is).
    ``version(value)`` gives an integer version: an older version never replaces a newer one,
    so concurrent writers leave the newest value. ``mode="invalidate"`` deletes the entry
    instead. A write that raises leaves the cache untouched; a cache failure after a successful
    write is logged (and counted as an error), never raised.
    """
    h: _Handle | None = getattr(target, "_rp_cache", None)
    if h is None:
        raise TypeError("write_through(target): target must be a function decorated with @cached")
    if mode not in ("update", "invalidate"):
        raise ValueError(f"mode must be 'update' or 'invalidate', got {mode!r}")
    validate.callable_or_none(value, "value=", "of the write's result")
    validate.callable_or_none(version, "version=", "of the write's result")
    if args is not None and not callable(args) and not isinstance(args, Mapping):
        raise TypeError("args= must be a mapping {cached parameter: write parameter} or a callable")
    h.ns.check_write("@write_through")
    handle = h

    def decorate(write: F) -> F:
        is_async = validate.is_async_callable(write)
        if is_async != handle.is_async:
            raise TypeError(
                f"{write.__qualname__} and {handle.spec.plan.fn_id} must both be async def or both def"
            )
        wsig = inspect.signature(write)
        target_sig = handle.spec.plan.signature
        rename: Mapping[str, str] = args if isinstance(args, Mapping) else {}
        first = next(iter(target_sig.parameters), None)
        skip = {first} if first in ("self", "cls") else set()
        lead: tuple[Any, ...] = (None,) if skip else ()  # the instance is never part of the key
        if not callable(args):
            wnames = set(wsig.parameters)
            for p in target_sig.parameters.values():
                if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                src = rename.get(p.name, p.name)
                if src not in wnames and p.default is inspect.Parameter.empty:
                    raise ValueError(
                        f"write_through: {write.__qualname__} has no parameter {src!r} for "
                        f"{handle.spec.plan.fn_id}'s {p.name!r}; rename with args={{{p.name!r}: ...}}"
                    )

        def target_keys(a: tuple[Any, ...], kw: Mapping[str, Any]) -> core.CallKeys:
            bound = wsig.bind(*a, **kw)
            bound.apply_defaults()
            given = dict(bound.arguments)
            if callable(args):
                targs = dict(args(**given))
            else:
                targs = {}
                for p in target_sig.parameters.values():
                    src = rename.get(p.name, p.name)
                    if p.name not in skip and src in given:
                        targs[p.name] = given[src]
            return handle.spec.keys_for(lead, targs)

        def after(result: Any, keys: core.CallKeys) -> Flow[str]:
            return core.write_back(handle.spec, keys, result, value, version, mode, handle.breaker, _rand)

        def report(status: str, keys: core.CallKeys) -> None:
            if status == core.ERROR or status == "error":
                log.error(
                    "write_through: the cache of %s was not updated (%r); it is invalidated as "
                    "soon as Redis answers again",
                    keys.value,
                    handle.breaker.last_error,
                )
                handle.record(core.ERROR, keys.value)
                handle.remember_stale(keys)
            elif status == "codec":
                handle.record(core.UNENCODABLE, keys.value)

        if is_async:

            @functools.wraps(write)
            async def awrite(*a: Any, **kw: Any) -> Any:
                keys = target_keys(a, kw)
                result = await write(*a, **kw)
                report(await run_async(handle.ns.client, after(result, keys)), keys)
                return result

            return cast(F, awrite)

        @functools.wraps(write)
        def swrite(*a: Any, **kw: Any) -> Any:
            keys = target_keys(a, kw)
            result = write(*a, **kw)
            report(run_sync(handle.ns.client, after(result, keys)), keys)
            return result

        return cast(F, swrite)

    return decorate


# --------------------------------------------------------------------------- tags


def invalidate_tags(
    *tags: str,
    mount: Mount | Namespace | None = None,
    client: Any = None,
    asyncio: bool | None = None,
) -> Any:
    """Delete every entry cached with any of ``tags`` (rendered, e.g. ``"user:42"``).

    Uses the same ``mount=`` / ``client=`` as the cached functions. With an asyncio client or
    namespace (or ``asyncio=True``) it returns an awaitable. Returns the number of keys deleted.
    """
    for t in tags:
        if not isinstance(t, str) or not t:
            raise TypeError("tags must be non-empty strings")
    if asyncio is None:
        if isinstance(mount, Namespace):
            asyncio = mount.asyncio
        else:
            asyncio = client is not None and is_async_client(client)
    ns = resolve(mount, client, asyncio=asyncio)
    ns.check_write("invalidate_tags")
    flow = core.invalidate_tags(ns.keyspace, tags)
    if ns.asyncio:
        return run_async(ns.client, flow)
    return run_sync(ns.client, flow)
