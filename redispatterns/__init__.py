"""redispatterns: production-grade Redis patterns, sync and asyncio, standalone and Cluster.

>>> import redispatterns as rp
>>> rp.configure("redis://localhost:6379/0")      # or $REDIS_URL

Every pattern lives under a :class:`Mount` (prefix, mode, default TTL), takes ``client=`` or
``mount=``, and has an ``Async`` twin with the same methods.
"""

from __future__ import annotations

from ._core.codec import Codec, JsonCodec, PickleCodec
from ._core.keys import Keyspace, glob_escape
from ._core.mount import Mount
from ._core.server import ServerInfo
from ._runner import server_info, server_info_async
from .client import configure, connect, connect_async
from .errors import (
    CacheError,
    ConfigurationError,
    CrossSlotError,
    DecodeError,
    LockError,
    LockLost,
    LockNotOwned,
    LockTimeout,
    QuotaExceeded,
    RateLimited,
    RedisPatternsError,
    SchemaError,
    ServerUnavailable,
    StreamError,
    UnsupportedByServer,
)
from .mount import Namespace

__version__ = "0.1.0"

_PATTERN_MODULES = ("cache", "ratelimit", "lock", "kv", "pubsub", "streams", "leaderboard", "session")


def __getattr__(name: str) -> object:
    """Names of pattern modules not yet re-exported explicitly (looked up in their ``__all__``)."""
    import importlib

    for mod_name in _PATTERN_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{mod_name}":
                continue
            raise
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CacheError",
    "Codec",
    "ConfigurationError",
    "CrossSlotError",
    "DecodeError",
    "JsonCodec",
    "Keyspace",
    "LockError",
    "LockLost",
    "LockNotOwned",
    "LockTimeout",
    "Mount",
    "Namespace",
    "PickleCodec",
    "QuotaExceeded",
    "RateLimited",
    "RedisPatternsError",
    "SchemaError",
    "ServerInfo",
    "ServerUnavailable",
    "StreamError",
    "UnsupportedByServer",
    "__version__",
    "configure",
    "connect",
    "connect_async",
    "glob_escape",
    "server_info",
    "server_info_async",
]
