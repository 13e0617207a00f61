"""Cache-aside (``@cached``) and write-through (``@write_through``), for ``def`` and ``async def``.

>>> @rp.cached(ttl=300, tags=["user:{user_id}"])
... def get_user(user_id: int) -> dict: ...

A hit is one ``GET``; a cold miss is one script (the value, or the fill lease) and one store.
Misses are stampede-proof: one computation per key per process (single-flight), one per key
across processes (a short lease in Redis, others wait for the value), stale-while-revalidate
after the soft TTL, and XFetch early refresh. Redis errors fail open behind a circuit breaker.
The logic is in :mod:`redispatterns._core.cache` (one flow per call, the single-flight a
``Coalesce`` op the runner executes); this module builds the wrappers and runs their flows.
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, ParamSpec, TypeVar, cast, overload

from ._cache_handle import CacheStats, EventHook, Handle, rand
from ._cache_near import NEAR_ENTRIES, decorate_near
from ._cache_types import AsyncCached, AsyncWriteThrough, Cached, CacheDecorator, WriteThrough
from ._cache_write import write_through
from ._core import cache as core
from ._core import validate
from ._core.breaker import CircuitBreaker
from ._core.cache import NotCached, StoreStatus
from ._core.cachekey import KeyPlan
from ._core.mount import Mount
from ._runner import run_async, run_sync, start_loop_async, wallclock
from .client import is_async_client
from .mount import Namespace, resolve

__all__ = [
    "NOT_CACHED",
    "AsyncCached",
    "AsyncWriteThrough",
    "CacheStats",
    "Cached",
    "CircuitBreaker",
    "NotCached",
    "StoreStatus",
    "WriteThrough",
    "cached",
    "invalidate_tags",
    "invalidate_tags_async",
    "write_through",
]

P = ParamSpec("P")
R = TypeVar("R")

NOT_CACHED: Final = core.NOT_FOUND
"""What ``fn.peek(...)`` returns when nothing (decodable) is cached for those arguments: the one
member of :class:`NotCached` (``value is NOT_CACHED`` narrows the type)."""


@overload
def cached(fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncCached[P, R]: ...  # type: ignore[overload-overlap]


@overload
def cached(fn: Callable[P, R], /) -> Cached[P, R]: ...


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
    near: bool | int = False,
) -> CacheDecorator: ...


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
    near: bool | int = False,
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
    ``near=True`` (or a number of entries, default 10,000): a process-local tier in front of
    Redis, kept coherent by the server's invalidation messages (``CLIENT TRACKING``): a repeated
    fresh read is a dictionary lookup and a decode, with no I/O (``stats.near`` counts).

    Returns a :class:`Cached` (``def``) or :class:`AsyncCached` (``async def``): the function
    with ``.invalidate(*a, **kw)``, ``.refresh(...)``, ``.peek(...)`` (the value or
    ``NOT_CACHED``), ``.set(value, *a, **kw)`` (a :class:`StoreStatus`), ``.key(...)`` and
    ``.stats`` (awaitable methods for ``async def``, ``key`` aside).
    """
    options = {
        "ttl": ttl, "key": key, "ignore": ignore, "tags": tags, "name": name, "version": version,
        "condition": condition, "jitter": jitter, "stale_ttl": stale_ttl, "lock_ttl": lock_ttl,
        "lock_wait": lock_wait, "early_refresh": early_refresh, "stale_if_error": stale_if_error,
        "mount": mount, "client": client, "breaker": breaker, "on_event": on_event, "near": near,
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
    n = o["near"]
    if not isinstance(n, bool) and (not isinstance(n, int) or n < 1):
        raise TypeError("near= must be True/False or a number of entries >= 1")
    v = o["version"]
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not v):
        raise TypeError("version= must be an int or a non-empty str")


def _handle(fn: Callable[..., Any], o: dict[str, Any]) -> Handle:
    """Everything fixed at decoration time: the namespace, the key plan, the spec, the breaker."""
    if not callable(fn):
        raise TypeError(f"@cached decorates a function, not {type(fn).__name__}")
    if isinstance(fn, (staticmethod, classmethod)):
        raise TypeError("put @cached below @staticmethod/@classmethod, on the plain function")
    ns = resolve(o["mount"], o["client"], asyncio=validate.is_async_callable(fn))
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
        clock=wallclock,
    )
    breaker = o["breaker"] if o["breaker"] is not None else CircuitBreaker()
    return Handle(fn, spec, ns, breaker, o["on_event"])


def _decorate(fn: Callable[..., Any], o: dict[str, Any]) -> Any:
    h = _handle(fn, o)
    near = o["near"]
    if near is not False:
        return _attach(h, decorate_near(h, NEAR_ENTRIES if near is True else int(near), _decorate_plain))
    return _attach(h, _decorate_plain(h))


def _decorate_plain(h: Handle) -> Any:
    """The wrapper: one flow per call, the hit counted inline."""
    fn, spec, ns, breaker = h.fn, h.spec, h.ns, h.breaker
    keys_for, record, call, flights_ = spec.keys_for, h.record, core.call, h.flights
    HIT = core.HIT
    counts = h.stats.counts
    clock = wallclock
    on_event = h.on_event  # fixed at decoration
    bound = ns._client  # a client given at decoration (fixed); None: the process default, per call

    if h.is_async:

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            keys = keys_for(args, kwargs)
            client = bound if bound is not None else ns.client
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
                if on_event is not None:
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
                bound if bound is not None else ns.client,
                call(spec, keys, fn, args, kwargs, breaker, rand, clock, flights_),
            )
            if outcome is HIT:
                counts[HIT] += 1
                if on_event is not None:
                    h.hook(HIT, keys.value)
            else:
                record(outcome, keys.value)
            return value

        wrapper = swrapper
    return wrapper


def _attach(h: Handle, wrapper: Any) -> Any:
    """The handle's methods and state, on the wrapper."""
    wrapper.invalidate = h.invalidate
    wrapper.peek = h.peek
    wrapper.refresh = h.refresh
    wrapper.set = h.set
    wrapper.key = h.key
    wrapper.stats = h.stats
    wrapper.breaker = h.breaker
    wrapper.original = h.fn
    wrapper._rp_cache = h
    return wrapper


# --------------------------------------------------------------------------- tags


def _tags_flow(tags: tuple[str, ...], mount: Mount | Namespace | None, client: Any, asyncio_: bool) -> Any:
    for t in tags:
        if not isinstance(t, str) or not t:
            raise TypeError("tags must be non-empty strings")
    ns = resolve(mount, client, asyncio=asyncio_)
    ns.check_write("invalidate_tags")
    return ns, core.invalidate_tags(ns.keyspace, tags)


_UNSET: Any = object()


def invalidate_tags(
    *tags: str, mount: Mount | Namespace | None = None, client: Any = None, asyncio: Any = _UNSET
) -> int:
    """Delete every entry cached with any of ``tags`` (rendered, e.g. ``"user:42"``); the number
    of keys deleted. Uses the same ``mount=`` / ``client=`` as the cached functions (sync ones;
    :func:`invalidate_tags_async` for asyncio). ``asyncio=`` is deprecated."""
    is_async = asyncio
    if is_async is _UNSET or is_async is None:
        is_async = (
            mount.asyncio if isinstance(mount, Namespace) else client is not None and is_async_client(client)
        )
    if asyncio is not _UNSET or is_async:
        warnings.warn(
            "invalidate_tags(..., asyncio=) and invalidate_tags() on an asyncio client are deprecated: "
            "use invalidate_tags() or await invalidate_tags_async()",
            DeprecationWarning,
            stacklevel=2,
        )
        if is_async:
            return cast(int, invalidate_tags_async(*tags, mount=mount, client=client))  # as before
    ns, flow = _tags_flow(tags, mount, client, False)
    return int(run_sync(ns.client, flow))


async def invalidate_tags_async(
    *tags: str, mount: Mount | Namespace | None = None, client: Any = None
) -> int:
    """The asyncio twin of :func:`invalidate_tags` (an asyncio ``client=`` or namespace)."""
    ns, flow = _tags_flow(tags, mount, client, True)
    return int(await run_async(ns.client, flow))
