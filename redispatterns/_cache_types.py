"""The static types of what ``@cached`` and ``@write_through`` return: protocols generic in the
decorated function's parameters ``P`` and result ``R``, so a checker sees the original call
signature and the typed handle methods (``invalidate``, ``peek``, ``refresh``, ``set``, ``key``,
``stats``). At run time a cached function is the wrapper function itself, carrying those
attributes (a function, so it binds as a method like the one it wraps)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from typing_extensions import Self

from ._cache_handle import CacheStats
from ._core.breaker import CircuitBreaker
from ._core.cache import NotCached, StoreStatus

__all__ = [
    "AsyncCached",
    "AsyncWriteThrough",
    "CacheDecorator",
    "Cached",
    "WriteThrough",
    "WriteThroughDecorator",
]

P = ParamSpec("P")
R = TypeVar("R")
W = ParamSpec("W")
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class Cached(Protocol[P, R]):
    """A cached ``def`` function: call it as the original; its entries through the methods."""

    @property
    def stats(self) -> CacheStats: ...
    @property
    def breaker(self) -> CircuitBreaker: ...
    @property
    def __wrapped__(self) -> Callable[P, R]: ...
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Delete the entry for these arguments (1 when one was cached)."""

    def peek(self, *args: P.args, **kwargs: P.kwargs) -> R | NotCached:
        """The cached value, without computing; ``NOT_CACHED`` when there is none."""

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now and store its result."""

    def set(self, value: R, /, *args: P.args, **kwargs: P.kwargs) -> StoreStatus:
        """Store ``value`` as the result for these arguments."""

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The Redis key of the entry for these arguments."""

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None, /) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None, /) -> Cached[..., R]: ...


class AsyncCached(Protocol[P, R]):
    """A cached ``async def`` function: the same methods as :class:`Cached`, awaitable."""

    @property
    def stats(self) -> CacheStats: ...
    @property
    def breaker(self) -> CircuitBreaker: ...
    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, int]:
        """Delete the entry for these arguments (1 when one was cached)."""

    def peek(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R | NotCached]:
        """The cached value, without computing; ``NOT_CACHED`` when there is none."""

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the function now and store its result."""

    def set(self, value: R, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, StoreStatus]:
        """Store ``value`` as the result for these arguments."""

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The Redis key of the entry for these arguments."""

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None, /) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None, /) -> AsyncCached[..., R]: ...


class CacheDecorator(Protocol):
    """What ``cached(ttl=...)`` returns: the decorator, typed for ``def`` and ``async def``."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncCached[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Cached[P, R]: ...


class WriteThrough(Protocol[W, V_co]):
    """A ``def`` write whose success updates (or invalidates) a cached function's entry."""

    @property
    def __wrapped__(self) -> Callable[W, V_co]: ...
    @property
    def target(self) -> Cached[..., Any]: ...
    def __call__(self, *args: W.args, **kwargs: W.kwargs) -> V_co: ...


class AsyncWriteThrough(Protocol[W, V_co]):
    """An ``async def`` write whose success updates (or invalidates) a cached entry."""

    @property
    def __wrapped__(self) -> Callable[W, Coroutine[Any, Any, V_co]]: ...
    @property
    def target(self) -> AsyncCached[..., Any]: ...
    def __call__(self, *args: W.args, **kwargs: W.kwargs) -> Coroutine[Any, Any, V_co]: ...


class WriteThroughDecorator(Protocol):
    """What ``write_through(target)`` returns: the decorator of the write."""

    @overload
    def __call__(self, write: Callable[W, Coroutine[Any, Any, V]], /) -> AsyncWriteThrough[W, V]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, write: Callable[W, V], /) -> WriteThrough[W, V]: ...
