"""FastAPI dependencies: rate limits per route or per user, sessions, the logged-in user.

Needs the ``fastapi`` extra (``pip install 'redispatterns[fastapi]'``).

>>> login_limit = RateLimit(AsyncSlidingWindowLimiter(5, 60, name="login"))   # doctest: +SKIP
>>> @app.post("/login", dependencies=[Depends(login_limit)])
... async def login(session: SessionDep): ...

* :class:`RateLimit` is a dependency over an asyncio limiter: admitted responses carry the IETF
  ``RateLimit``/``RateLimit-Policy`` headers; a denial raises :class:`RateLimitExceeded`, an
  ``HTTPException`` (429, ``Retry-After``). :func:`add_rate_limit_handler` renders it as the
  middleware's ``application/problem+json`` body instead of FastAPI's ``{"detail": ...}``.
  (The headers ride on FastAPI's response; an endpoint returning a ``Response`` of its own
  sends its own headers.)
  The subject is the client address by default (``X-Forwarded-For`` only from
  ``trusted_proxies``); ``key=user_key`` limits per logged-in user; ``per_route=True`` gives
  every route its own budget from one limiter.
* :data:`SessionDep` is the request's loaded session (:class:`ASGISessionMiddleware` must be
  installed: it reads and writes the cookie); :data:`UserDep` is the logged-in user id or a 401.
* Caching: an ``@rp.cached`` ``async def`` is a dependency as it is (``Depends(get_product)``):
  FastAPI fills its parameters from the path and query, and the cache keys on them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response

from ..ratelimit import AsyncMultiLimiter, Decision
from .ratelimit import _networks, _problem, client_address
from .session import AsyncSessionHandle

__all__ = [
    "RateLimit",
    "RateLimitExceeded",
    "SessionDep",
    "UserDep",
    "add_rate_limit_handler",
    "current_user",
    "ip_key",
    "session",
    "user_key",
]

CLIENT_KEY = "redispatterns.client"  # the resolved client address, in the ASGI scope
KeyFn = Callable[[Request], "str | Awaitable[str | None] | None"]


class RateLimitExceeded(HTTPException):
    """A 429 raised by :class:`RateLimit`; ``decision`` is the limiter's :class:`Decision`."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(status_code=429, detail="Too Many Requests", headers=decision.headers())
        self.decision = decision


def ip_key(request: Request) -> str:
    """The default subject: the peer address (``RateLimit`` resolves trusted proxies first)."""
    return f"ip:{request.scope.get(CLIENT_KEY) or (request.client.host if request.client else 'unknown')}"


async def user_key(request: Request) -> str:
    """The logged-in user (``user:<id>``), else the client address: per-user limits."""
    handle = request.scope.get("session")
    if isinstance(handle, AsyncSessionHandle):
        await handle.load()
        if handle.user_id is not None:
            return f"user:{handle.user_id}"
    return ip_key(request)


class RateLimit:
    """A dependency that spends ``cost`` from ``limiter`` per request; returns the Decision."""

    def __init__(
        self,
        limiter: AsyncMultiLimiter,
        *,
        key: KeyFn | None = None,
        cost: int = 1,
        per_route: bool = False,
        trusted_proxies: Iterable[str] = (),
        headers: bool = True,
    ) -> None:
        if not isinstance(limiter, AsyncMultiLimiter):
            raise TypeError("RateLimit needs an asyncio limiter (e.g. AsyncSlidingWindowLimiter)")
        if key is not None and not callable(key):
            raise TypeError("key must be a function of the Request returning a str (or None to skip)")
        self.limiter, self.key, self.cost = limiter, key or ip_key, cost
        self.per_route, self.trusted, self.send_headers = per_route, _networks(trusted_proxies), headers

    async def __call__(self, request: Request, response: Response) -> Decision | None:
        peer = request.client.host if request.client else None
        request.scope[CLIENT_KEY] = client_address(peer, request.headers.get("x-forwarded-for"), self.trusted)
        subject = self.key(request)
        if inspect.isawaitable(subject):
            subject = await subject
        if subject is None:
            return None
        if self.per_route:
            route = request.scope.get("route")
            subject = f"{request.method} {getattr(route, 'path', request.url.path)} {subject}"
        d = await self.limiter.hit(subject, self.cost)
        if not d.allowed:
            raise RateLimitExceeded(d)
        if self.send_headers:
            response.headers.update(d.headers())
        return d


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    return Response(_problem(exc.decision), 429, headers=exc.headers, media_type="application/problem+json")


def add_rate_limit_handler(app: FastAPI) -> None:
    """Answer :class:`RateLimitExceeded` with the middleware's ``application/problem+json``."""
    app.add_exception_handler(RateLimitExceeded, _problem_handler)


async def session(request: Request) -> AsyncSessionHandle:
    """The request's session, loaded (one round trip when the browser has a cookie)."""
    handle = request.scope.get("session")
    if not isinstance(handle, AsyncSessionHandle):
        raise RuntimeError(
            "SessionDep needs the session middleware: app.add_middleware(ASGISessionMiddleware, store=...)"
        )
    await handle.load()
    return handle


SessionDep = Annotated[AsyncSessionHandle, Depends(session)]


async def current_user(handle: SessionDep) -> str:
    """The logged-in user's id; 401 when there is none (anonymous sessions included)."""
    if handle.user_id is None:
        raise HTTPException(401, "not logged in", headers={"WWW-Authenticate": "Cookie"})
    return handle.user_id


UserDep = Annotated[str, Depends(current_user)]
