"""``@write_through(target)``: after a write succeeds, the cached entry of ``target`` holds the
new value (or is dropped). The flow is :func:`redispatterns._core.cache.write_back`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

from ._cache_handle import Handle, log, rand
from ._cache_types import AsyncCached, Cached, WriteThroughDecorator
from ._core import cache as core
from ._core import validate
from ._core.cache import StoreStatus
from ._core.ops import Flow
from ._runner import run_async, run_sync

__all__ = ["write_through"]


def write_through(
    target: Cached[..., Any] | AsyncCached[..., Any],
    *,
    args: Mapping[str, str] | Callable[..., Mapping[str, Any]] | None = None,
    value: Callable[[Any], Any] | None = None,
    version: Callable[[Any], int] | None = None,
    mode: str = "update",
) -> WriteThroughDecorator:
    """After the decorated write succeeds, ``target``'s cached entry holds the new value.

    ``target`` is a ``@cached`` function. Its arguments are taken by name from the write's
    arguments; ``args={"user_id": "uid"}`` renames (cached parameter -> write parameter), or a
    callable gets the write's arguments as keywords and returns the cached function's.
    ``value(result)`` turns the write's return value into the cached value (default: as is).
    ``version(value)`` gives an integer version: an older version never replaces a newer one,
    so concurrent writers leave the newest value. ``mode="invalidate"`` deletes the entry
    instead. A write that raises leaves the cache untouched; a cache failure after a successful
    write is logged (and counted as an error), never raised. The decorated write is typed
    :class:`~redispatterns.WriteThrough` (``def``) or :class:`~redispatterns.AsyncWriteThrough`.
    """
    h: Handle | None = getattr(target, "_rp_cache", None)
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

    def decorate(write: Callable[..., Any]) -> Any:
        is_async = validate.is_async_callable(write)
        if is_async != handle.is_async:
            raise TypeError(
                f"{write.__qualname__} and {handle.spec.plan.fn_id} must both be async def or both def"
            )
        target_keys = _key_mapper(handle, write, args)

        def after(result: Any, keys: core.CallKeys) -> Flow[StoreStatus]:
            return core.write_back(handle.spec, keys, result, value, version, mode, handle.breaker, rand)

        def report(status: StoreStatus, keys: core.CallKeys) -> None:
            if status is StoreStatus.ERROR:
                log.error(
                    "write_through: the cache of %s was not updated (%r); it is invalidated as "
                    "soon as Redis answers again",
                    keys.value,
                    handle.breaker.last_error,
                )
                handle.record(core.ERROR, keys.value)
                handle.remember_stale(keys)
            elif status is StoreStatus.CODEC:
                handle.record(core.UNENCODABLE, keys.value)

        if is_async:

            @functools.wraps(write)
            async def awrite(*a: Any, **kw: Any) -> Any:
                keys = target_keys(a, kw)
                result = await write(*a, **kw)
                report(await run_async(handle.ns.client, after(result, keys)), keys)
                return result

            wrapper: Any = awrite
        else:

            @functools.wraps(write)
            def swrite(*a: Any, **kw: Any) -> Any:
                keys = target_keys(a, kw)
                result = write(*a, **kw)
                report(run_sync(handle.ns.client, after(result, keys)), keys)
                return result

            wrapper = swrite
        wrapper.target = target
        return wrapper

    return cast(WriteThroughDecorator, decorate)  # typed by the protocol's overloads


def _key_mapper(
    handle: Handle,
    write: Callable[..., Any],
    args: Mapping[str, str] | Callable[..., Mapping[str, Any]] | None,
) -> Callable[[tuple[Any, ...], Mapping[str, Any]], core.CallKeys]:
    """The target's keys from a call of the write (checked now against both signatures)."""
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

    spec = handle.spec
    direct = None if callable(args) else _positions(wsig, target_sig, rename, skip)

    def target_keys(a: tuple[Any, ...], kw: Mapping[str, Any]) -> core.CallKeys:
        if direct is not None and not kw and len(a) == len(wsig.parameters):
            # every argument given by position: the target's, in its order, with no binding
            return spec.keys_for((*lead, *[a[i] for i in direct]), {})
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

    return target_keys


def _positions(
    wsig: inspect.Signature, target_sig: inspect.Signature, rename: Mapping[str, str], skip: set[Any]
) -> tuple[int, ...] | None:
    """For each parameter of the target (its instance aside), the position of the write's
    parameter it is taken from; ``None`` unless both take plain positional-or-keyword parameters
    without defaults and the write supplies every one of the target's."""
    plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
    empty = inspect.Parameter.empty
    wparams = list(wsig.parameters.values())
    tparams = [p for p in target_sig.parameters.values() if p.name not in skip]
    if any(p.kind is not plain or p.default is not empty for p in (*wparams, *tparams)):
        return None
    wnames = [p.name for p in wparams]
    try:
        return tuple(wnames.index(rename.get(p.name, p.name)) for p in tparams)
    except ValueError:  # a target parameter the write does not take
        return None
