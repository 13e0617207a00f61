"""redispatterns: production-grade Redis patterns, sync and asyncio, standalone and Cluster.

>>> import redispatterns as rp
>>> rp.configure("redis://localhost:6379/0")      # or $REDIS_URL

Every pattern lives under a :class:`Mount` (prefix, mode, default TTL), takes ``client=`` or
``mount=``, and has an ``Async`` twin with the same methods.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import http as http  # the web adapters: redispatterns.http
from ._core.codec import Codec, JsonCodec, PickleCodec
from ._core.mount import Mount
from ._core.server import ServerInfo
from ._runner import server_info, server_info_async
from .cache import (
    NOT_CACHED,
    AsyncCached,
    AsyncWriteThrough,
    Cached,
    CacheStats,
    CircuitBreaker,
    WriteThrough,
    cached,
    invalidate_tags,
    invalidate_tags_async,
    write_through,
)
from .client import aclose, close, configure, connect, connect_async
from .errors import (
    ConfigurationError,
    CrossSlotError,
    DecodeError,
    LeaderboardError,
    LockError,
    LockLost,
    LockNotOwned,
    LockTimeout,
    MergeConflict,
    QuotaExceeded,
    RateLimited,
    RedisPatternsError,
    SchemaError,
    SchemaTypeError,
    ScoreOutOfRange,
    ServerError,
    ServerUnavailable,
    SessionConflict,
    StoreNotFound,
    StreamError,
    SubscriberOverflow,
    UnsupportedByServer,
)
from .kv import KV, AsyncKV, KVInfo
from .leaderboard import AsyncLeaderboard, Leaderboard, LeaderboardEntry
from .lock import AsyncLock, AsyncLockHandle, Lock, LockHandle, locked
from .mount import Namespace
from .pubsub import (
    AsyncPublisher,
    AsyncSubscriber,
    Gap,
    Publisher,
    PubSubMessage,
    Subscriber,
    SubscriberStats,
    publish,
    publish_async,
)
from .ratelimit import (
    AsyncFixedWindowLimiter,
    AsyncMultiLimiter,
    AsyncRateLimitedFunction,
    AsyncSlidingCounterLimiter,
    AsyncSlidingWindowLimiter,
    AsyncTokenBucketLimiter,
    Decision,
    FixedWindowLimiter,
    MultiLimiter,
    Policy,
    PolicyState,
    RateLimitedFunction,
    SlidingCounterLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    rate_limited,
)
from .redlock import AsyncRedlock, AsyncRedlockHandle, Redlock, RedlockHandle
from .semaphore import AsyncSemaphore, AsyncSemaphoreLease, Semaphore, SemaphoreLease
from .session import (
    AsyncSessionStore,
    Session,
    SessionInfo,
    SessionStore,
    SessionSummary,
    SummaryStats,
    TrackEvent,
)
from .store import (
    AsyncKeyValueStore,
    KeyValueStore,
    KeyValueStoreMetadata,
    KeyValueStoreRecord,
    KeyValueStoreRecordMetadata,
)
from .streams import (
    AsyncConsumer,
    AsyncStream,
    AsyncStreamMessage,
    Backoff,
    Consumer,
    ConsumerStats,
    DeadLetter,
    Stream,
    StreamMessage,
    StreamStats,
)

__version__ = "0.1.0"

# Old names, importable for one more release with a DeprecationWarning: (module, new name).
_DEPRECATED: dict[str, tuple[str, str]] = {
    "Held": ("lock", "LockHandle"),
    "AsyncHeld": ("lock", "AsyncLockHandle"),
    "RedlockHeld": ("redlock", "RedlockHandle"),
    "AsyncRedlockHeld": ("redlock", "AsyncRedlockHandle"),
    "Lease": ("semaphore", "SemaphoreLease"),
    "AsyncLease": ("semaphore", "AsyncSemaphoreLease"),
    "Entry": ("leaderboard", "LeaderboardEntry"),
    "StreamMetrics": ("streams", "StreamStats"),
    **{
        n: ("http", n)
        for n in (
            "ASGIRateLimitMiddleware",
            "ASGISessionMiddleware",
            "AsyncSessionHandle",
            "CookiePolicy",
            "SessionHandle",
            "WSGIRateLimitMiddleware",
            "WSGISessionMiddleware",
        )
    },
}


__all__ = [
    "AsyncCached",
    "AsyncConsumer",
    "AsyncFixedWindowLimiter",
    "AsyncKV",
    "AsyncKeyValueStore",
    "AsyncLeaderboard",
    "AsyncLock",
    "AsyncLockHandle",
    "AsyncMultiLimiter",
    "AsyncPublisher",
    "AsyncRateLimitedFunction",
    "AsyncRedlock",
    "AsyncRedlockHandle",
    "AsyncSemaphore",
    "AsyncSemaphoreLease",
    "AsyncSessionStore",
    "AsyncSlidingCounterLimiter",
    "AsyncSlidingWindowLimiter",
    "AsyncStream",
    "AsyncStreamMessage",
    "AsyncSubscriber",
    "AsyncTokenBucketLimiter",
    "AsyncWriteThrough",
    "Backoff",
    "CacheStats",
    "Cached",
    "CircuitBreaker",
    "Codec",
    "ConfigurationError",
    "Consumer",
    "ConsumerStats",
    "CrossSlotError",
    "DeadLetter",
    "Decision",
    "DecodeError",
    "FixedWindowLimiter",
    "Gap",
    "JsonCodec",
    "KV",
    "KVInfo",
    "KeyValueStore",
    "KeyValueStoreMetadata",
    "KeyValueStoreRecord",
    "KeyValueStoreRecordMetadata",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardError",
    "Lock",
    "LockError",
    "LockHandle",
    "LockLost",
    "LockNotOwned",
    "LockTimeout",
    "MergeConflict",
    "Mount",
    "MultiLimiter",
    "NOT_CACHED",
    "Namespace",
    "PickleCodec",
    "Policy",
    "PolicyState",
    "PubSubMessage",
    "Publisher",
    "QuotaExceeded",
    "RateLimited",
    "RateLimitedFunction",
    "RedisPatternsError",
    "Redlock",
    "RedlockHandle",
    "SchemaError",
    "SchemaTypeError",
    "ScoreOutOfRange",
    "Semaphore",
    "SemaphoreLease",
    "ServerError",
    "ServerInfo",
    "ServerUnavailable",
    "Session",
    "SessionConflict",
    "SessionInfo",
    "SessionStore",
    "SessionSummary",
    "SlidingCounterLimiter",
    "SlidingWindowLimiter",
    "StoreNotFound",
    "Stream",
    "StreamError",
    "StreamMessage",
    "StreamStats",
    "Subscriber",
    "SubscriberOverflow",
    "SubscriberStats",
    "SummaryStats",
    "TokenBucketLimiter",
    "TrackEvent",
    "UnsupportedByServer",
    "WriteThrough",
    "__version__",
    "aclose",
    "cached",
    "close",
    "configure",
    "connect",
    "connect_async",
    "invalidate_tags",
    "invalidate_tags_async",
    "locked",
    "publish",
    "publish_async",
    "rate_limited",
    "server_info",
    "server_info_async",
    "write_through",
]


if not TYPE_CHECKING:  # type checkers see only the current names

    def __getattr__(name: str) -> object:
        """Resolve a deprecated name with a warning that says where it went."""
        if name not in _DEPRECATED:
            raise AttributeError(f"module 'redispatterns' has no attribute {name!r}")
        import importlib
        import warnings

        module, new = _DEPRECATED[name]
        where = f"redispatterns.http.{new}" if module == "http" else f"redispatterns.{new}"
        warnings.warn(
            f"redispatterns.{name} is deprecated and goes in the next release: use {where}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f"redispatterns.{module}"), new)


# A library's loggers stay silent until the application configures logging (the stdlib's advice
# for libraries): without this, Python's last-resort handler prints WARNING records to stderr.
logging.getLogger("redispatterns").addHandler(logging.NullHandler())
