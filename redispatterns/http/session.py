"""Cookie session middlewares for ASGI and WSGI apps, with no framework dependency.

The cookie holds only the token; Redis holds only its hash. Per request the app finds a lazy
handle (``scope["session"]`` for ASGI, ``environ["redispatterns.session"]`` for WSGI):

* nothing touches Redis until the app loads the session (static files cost nothing);
* item writes are collected and saved as one field-level update before the response starts,
  so concurrent requests that change different fields lose nothing, and nothing is written
  when nothing changed;
* ``login(user_id)`` creates a session (revoking the one the browser had: no fixation),
  ``logout()`` revokes it and expires the cookie, ``rotate()`` issues a new token.

Cookies are ``HttpOnly; Secure; SameSite=Lax; Path=/`` by default, and responses that read
the session get ``Vary: Cookie``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from .._core.session import Session, check_token
from ..session import AsyncSessionStore, SessionStore

__all__ = [
    "ASGISessionMiddleware",
    "AsyncSessionHandle",
    "CookiePolicy",
    "SessionHandle",
    "WSGISessionMiddleware",
]

WSGI_KEY = "redispatterns.session"
_SAMESITE = ("lax", "strict", "none")


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the token cookie is written. ``max_age=None``: a browser-session cookie."""

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    httponly: bool = True
    samesite: str = "lax"
    max_age: int | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ' ;,="\t\r\n'):
            raise ValueError(f"bad cookie name {self.name!r}")
        if self.samesite.lower() not in _SAMESITE:
            raise ValueError(f"samesite must be one of {', '.join(_SAMESITE)}")
        if self.samesite.lower() == "none" and not self.secure:
            raise ValueError("SameSite=None cookies must be Secure (browsers reject them otherwise)")

    def read(self, header: str | None) -> str | None:
        """The token from a ``Cookie`` header, if it has our shape (anything else is ignored)."""
        if not header:
            return None
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == self.name:
                value = value.strip().strip('"')
                return value if check_token(value) else None
        return None

    def set_cookie(self, token: str | None) -> str:
        """A ``Set-Cookie`` value: the token, or an expired cookie when ``token`` is None."""
        parts = [f"{self.name}={token or ''}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if token is None:
            parts.append("Max-Age=0")
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        elif self.max_age is not None:
            parts.append(f"Max-Age={int(self.max_age)}")
        if self.secure:
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        return "; ".join(parts)


_MISSING: Any = object()


class _HandleState(MutableMapping[str, Any]):
    """What a request did to its session: the bookkeeping both handles share (no I/O)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.session: Session | None = None
        self.loaded = False
        self.changes: dict[str, Any] = {}
        self.removed: set[str] = set()
        self.cookie: Any = _MISSING  # _MISSING: leave the cookie alone

    # the data view (load first)
    def _data(self) -> dict[str, Any]:
        if not self.loaded:
            raise RuntimeError("load the session first (session.load(), awaited on ASGI)")
        return self.session.data if self.session is not None else {}

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if self.session is None:
            self._data()
            raise RuntimeError("no session: call login(user_id) before storing data")
        self.session.data[key] = value
        self.changes[key] = value
        self.removed.discard(key)

    def __delitem__(self, key: str) -> None:
        del self._data()[key]
        self.changes.pop(key, None)
        self.removed.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    @property
    def user_id(self) -> str | None:
        return self.session.user_id if self.session is not None else None

    @property
    def dirty(self) -> bool:
        return bool(self.changes or self.removed)

    def _loaded(self, session: Session | None) -> Session | None:
        self.session, self.loaded = session, True
        if session is None and self.token is not None:
            self.cookie = None  # a dead token: expire the browser's cookie
        return session

    def _logged_in(self, token: str, session: Session | None) -> None:
        self.token, self.cookie = token, token
        self.changes.clear()
        self.removed.clear()
        self._loaded(session)

    def _logged_out(self) -> None:
        self.token, self.session, self.loaded, self.cookie = None, None, True, None
        self.changes.clear()
        self.removed.clear()

    def headers(self, policy: CookiePolicy) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.loaded or self.cookie is not _MISSING:
            out.append(("Vary", "Cookie"))
        if self.cookie is not _MISSING:
            out.append(("Set-Cookie", policy.set_cookie(self.cookie)))
        return out


class SessionHandle(_HandleState):
    """The per-request session of the WSGI middleware (a lazy mapping of the session's data)."""

    def __init__(self, store: SessionStore, token: str | None) -> None:
        super().__init__(token)
        self._store = store

    def load(self) -> Session | None:
        if not self.loaded:
            self._loaded(self._store.get(self.token) if self.token else None)
        return self.session

    def login(self, user_id: str, data: dict[str, Any] | None = None, **meta: Any) -> str:
        if self.token:
            self._store.destroy(self.token)
        token = self._store.create(user_id, data, **meta)
        self._logged_in(token, self._store.get(token))
        return token

    def logout(self) -> None:
        if self.token:
            self._store.destroy(self.token)
        self._logged_out()

    def rotate(self) -> str | None:
        self.commit()
        token = self._store.rotate(self.token) if self.token else None
        if token is not None:
            self._logged_in(token, self._store.get(token))
        return token

    def commit(self) -> None:
        if self.dirty and self.token:
            if self._store.update(self.token, self.changes, remove=self.removed) is None:
                self.cookie = None
            self.changes, self.removed = {}, set()


class AsyncSessionHandle(_HandleState):
    """The per-request session of the ASGI middleware: ``await load()``, then use it as a mapping."""

    def __init__(self, store: AsyncSessionStore, token: str | None) -> None:
        super().__init__(token)
        self._store = store

    async def load(self) -> Session | None:
        if not self.loaded:
            self._loaded(await self._store.get(self.token) if self.token else None)
        return self.session

    async def login(self, user_id: str, data: dict[str, Any] | None = None, **meta: Any) -> str:
        if self.token:
            await self._store.destroy(self.token)
        token = await self._store.create(user_id, data, **meta)
        self._logged_in(token, await self._store.get(token))
        return token

    async def logout(self) -> None:
        if self.token:
            await self._store.destroy(self.token)
        self._logged_out()

    async def rotate(self) -> str | None:
        await self.commit()
        token = await self._store.rotate(self.token) if self.token else None
        if token is not None:
            self._logged_in(token, await self._store.get(token))
        return token

    async def commit(self) -> None:
        if self.dirty and self.token:
            if await self._store.update(self.token, self.changes, remove=self.removed) is None:
                self.cookie = None
            self.changes, self.removed = {}, set()


Scope = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGISessionMiddleware:
    """``app = ASGISessionMiddleware(app, AsyncSessionStore(...))``; the app reads ``scope["session"]``."""

    def __init__(self, app: ASGIApp, store: AsyncSessionStore, policy: CookiePolicy | None = None) -> None:
        if not isinstance(store, AsyncSessionStore):
            raise TypeError("the ASGI middleware needs an AsyncSessionStore")
        self.app, self.store, self.policy = app, store, policy or CookiePolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        cookie = b"; ".join(v for k, v in scope.get("headers", ()) if k.lower() == b"cookie")
        handle = AsyncSessionHandle(self.store, self.policy.read(cookie.decode("latin-1")))
        scope["session"] = handle

        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                await handle.commit()
                extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in handle.headers(self.policy)]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, wrapped)


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGISessionMiddleware:
    """``app = WSGISessionMiddleware(app, SessionStore(...))``; the app reads
    ``environ["redispatterns.session"]``."""

    def __init__(self, app: WSGIApp, store: SessionStore, policy: CookiePolicy | None = None) -> None:
        if not isinstance(store, SessionStore):
            raise TypeError("the WSGI middleware needs a (sync) SessionStore")
        self.app, self.store, self.policy = app, store, policy or CookiePolicy()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        handle = SessionHandle(self.store, self.policy.read(environ.get("HTTP_COOKIE")))
        environ[WSGI_KEY] = handle

        def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            handle.commit()
            return start_response(status, [*headers, *handle.headers(self.policy)], exc_info)

        return self.app(environ, wrapped)
