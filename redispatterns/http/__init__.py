"""The HTTP layer: ASGI/WSGI middlewares and framework adapters, above the pattern shells.

This package imports the shells (``redispatterns.ratelimit``, ``redispatterns.session``, ...);
the shells never import it, and nothing here imports a web framework at module level. The
framework adapters are separate modules that need their extra installed:
``redispatterns.http.fastapi`` (``redispatterns[fastapi]``), ``redispatterns.http.flask``
(``redispatterns[flask]``) and ``redispatterns.http.django`` (``redispatterns[django]``).
"""

from __future__ import annotations

from .ratelimit import ASGIRateLimitMiddleware, RequestInfo, WSGIRateLimitMiddleware, client_address
from .session import (
    ANONYMOUS_PREFIX,
    ASGISessionMiddleware,
    AsyncSessionHandle,
    CookiePolicy,
    SessionHandle,
    WSGISessionMiddleware,
)

__all__ = [
    "ANONYMOUS_PREFIX",
    "ASGIRateLimitMiddleware",
    "ASGISessionMiddleware",
    "AsyncSessionHandle",
    "CookiePolicy",
    "RequestInfo",
    "SessionHandle",
    "WSGIRateLimitMiddleware",
    "WSGISessionMiddleware",
    "client_address",
]
