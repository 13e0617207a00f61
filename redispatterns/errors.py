"""One exception hierarchy for every pattern, with structured fields.

Input mistakes raise the builtin ``ValueError``/``TypeError``/``PermissionError`` so that callers can
catch them as usual; conditions that come from Redis (or from the state kept there) raise a subclass
of :class:`RedisPatternsError`.

Errors of the redis client never leave the library raw: the runners turn them into
:class:`ServerUnavailable` (an outage: refused or reset connection, timeout, hung server, cluster
down or unreachable, a pool that stayed full) or :class:`ServerError` (the server answered with an
error: out of memory, read-only, no permission, ...). The error raised is also an instance of the
redis-py class it replaces (a ``redis.exceptions.TimeoutError`` stays one, so does an
``OutOfMemoryError``), the original is its ``__cause__``, and its message never holds a password.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.exceptions

__all__ = [
    "ConfigurationError",
    "CrossSlotError",
    "DecodeError",
    "LockError",
    "LockLost",
    "LockNotOwned",
    "LockTimeout",
    "LeaderboardError",
    "MergeConflict",
    "QuotaExceeded",
    "RateLimited",
    "RedisPatternsError",
    "SchemaError",
    "SchemaTypeError",
    "ScoreOutOfRange",
    "ServerError",
    "ServerUnavailable",
    "SessionConflict",
    "StoreNotFound",
    "StreamError",
    "SubscriberOverflow",
    "UnsupportedByServer",
]


class RedisPatternsError(Exception):
    """Base class of every error raised by redispatterns itself."""


class ConfigurationError(RedisPatternsError, ValueError):
    """A URL, mount or option that cannot work (also a ``ValueError``)."""


class ServerUnavailable(RedisPatternsError, redis.exceptions.ConnectionError, ConnectionError):
    """Redis could not be used: connection refused or reset, a timeout (hung server), cluster down
    or no reachable node, a pool that stayed exhausted, a circuit breaker open after outages.

    Also a ``redis.exceptions.ConnectionError`` (and the builtin ``ConnectionError``), so existing
    ``except`` clauses keep working. ``url``: the server's address, password masked, when known.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ServerError(RedisPatternsError, redis.exceptions.ResponseError):
    """Redis answered a command with an error (``OOM`` under ``maxmemory``/``noeviction``,
    ``READONLY``, ``NOPERM``, ``WRONGTYPE``, a script error...). Also a
    ``redis.exceptions.ResponseError``. ``url`` as for :class:`ServerUnavailable`.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class UnsupportedByServer(RedisPatternsError):
    """The server lacks a command or option this call needs."""

    def __init__(self, feature: str, server: str = "") -> None:
        super().__init__(f"{feature} is not supported by {server or 'this server'}")
        self.feature = feature
        self.server = server


class CrossSlotError(RedisPatternsError, ValueError):
    """Keys of one script, multi-key command or transaction fall in different Cluster slots.

    Raised before any I/O, so it shows on a single node as it would on a Cluster.
    """

    def __init__(self, keys: Sequence[str | bytes], slots: Sequence[int]) -> None:
        shown = ", ".join(f"{k!r}->{s}" for k, s in zip(keys, slots, strict=False))
        super().__init__(
            f"keys span {len(set(slots))} cluster slots ({shown}); give them one hash tag, "
            "e.g. 'app:{user:42}:a' and 'app:{user:42}:b'"
        )
        self.keys = tuple(keys)
        self.slots = tuple(slots)


class DecodeError(RedisPatternsError, ValueError):
    """A stored value could not be decoded by the codec."""


class LockError(RedisPatternsError):
    """Base of lock errors; ``name`` is the lock's name."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class LockNotOwned(LockError):
    """Release or extend of a lock held by someone else (or by no one)."""


class LockTimeout(LockError):
    """The lock could not be acquired within the timeout."""

    def __init__(self, message: str, *, name: str, timeout: float | None) -> None:
        super().__init__(message, name=name)
        self.timeout = timeout


class LockLost(LockError):
    """A held lock expired or was taken over while its holder was still working."""


class RateLimited(RedisPatternsError):
    """A rate limit denied the call; ``retry_after`` is seconds, ``None`` means never."""

    def __init__(
        self,
        message: str = "rate limited",
        *,
        retry_after: float | None,
        key: str = "",
        decision: object | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.key = key
        self.decision = decision


class QuotaExceeded(RedisPatternsError):
    """A write would exceed a quota (entries, value size, store size); nothing was written."""

    def __init__(self, message: str, *, quota: str, limit: int, mount: str = "") -> None:
        super().__init__(message)
        self.quota = quota
        self.limit = limit
        self.mount = mount


class SchemaError(RedisPatternsError, ValueError):
    """A key or value does not fit the mount's schema."""


class StreamError(RedisPatternsError):
    """A stream or consumer-group condition the caller must handle."""


class SchemaTypeError(SchemaError, TypeError):
    """A value's type does not match its schema field (a ``SchemaError`` and a ``TypeError``)."""


class MergeConflict(RedisPatternsError):
    """A kv merge lost the compare-and-set race too many times in a row."""


class LeaderboardError(RedisPatternsError):
    """A leaderboard operation refused by the server-side checks."""


class ScoreOutOfRange(LeaderboardError, ValueError):
    """A tie-broken score (or the result of an increment) would leave the exact integer range."""


class SessionConflict(RedisPatternsError):
    """``update(..., expect_version=n)`` found another version: someone wrote in between."""

    def __init__(self, expected: int) -> None:
        super().__init__(f"session changed since version {expected}; reload it and retry")
        self.expected = expected


class SubscriberOverflow(RedisPatternsError):
    """The subscriber's queue filled up under ``overflow="error"``; the subscriber has stopped."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(
            f"subscriber queue is full ({maxsize} messages): the consumer is too slow; raise "
            "maxsize, or choose overflow='drop_oldest' / 'drop_newest' / 'block'"
        )
        self.maxsize = maxsize


class StoreNotFound(RedisPatternsError, LookupError):
    """A key-value store was dropped (or never opened): writes and ``get_metadata`` refuse."""

    def __init__(self, store_id: str) -> None:
        super().__init__(
            f"key-value store {store_id!r} does not exist (dropped?): open it again with "
            "KeyValueStore.open(...) to create it"
        )
        self.store_id = store_id
