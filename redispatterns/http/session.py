"""Cookie session middlewares for ASGI and WSGI apps, with no framework dependency.

The cookie holds only the token; Redis holds only its hash. Per request the app finds a
handle (``scope["session"]`` for ASGI, ``environ["redispatterns.session"]`` for WSGI) that is
a mutable mapping of the session's data once loaded:

* nothing touches Redis until the app loads the session (static files cost nothing), unless
  the middleware is asked to ``preload`` it (then ``request.session`` is a plain mapping,
  as with Starlette's own middleware; a request without a cookie still costs nothing);
* item writes are collected and saved as one field-level update before the response starts,
  so concurrent requests that change different fields lose nothing, and nothing is written
  when nothing changed;
* ``login(user_id)`` creates a session (revoking the one the browser had: no fixation),
  ``logout()`` revokes it and expires the cookie, ``rotate()`` issues a new token;
* with ``anonymous=True``, writing to a visitor's empty session creates an anonymous one
  (a cart, an OIDC state/nonce before login); ``login`` then carries its data into the new,
  authenticated session under a new id and revokes the anonymous one.

Cookies are ``HttpOnly; SameSite=Lax; Path=/`` and ``Secure`` when the request came over
https (``CookiePolicy(secure=True|False)`` fixes it either way; behind a TLS-terminating proxy
let the server set the scheme from ``X-Forwarded-Proto``, e.g. uvicorn ``--proxy-headers``).
Responses that read the session get ``Vary: Cookie``.

One logic, two runtimes: each handle operation is a small generator of store calls
(``_Call``), driven by a loop that calls the sync store or awaits the async one.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .._core.session import Session, UserId, check_token
from ..session import AsyncSessionStore, SessionStore

__all__ = [
    "ANONYMOUS_PREFIX",
    "ASGISessionMiddleware",
    "AsyncSessionHandle",
    "CookiePolicy",
    "SessionHandle",
    "WSGISessionMiddleware",
]

WSGI_KEY = "redispatterns.session"
ANONYMOUS_PREFIX = "~anon:"  # the user id of an anonymous session: this prefix + 24 hex digits
_SAMESITE = ("lax", "strict", "none")


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """How the token cookie is written. ``max_age=None``: a browser-session cookie;
    ``secure=None``: ``Secure`` exactly when the request came over https."""

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool | None = None
    httponly: bool = True
    samesite: str = "lax"
    max_age: int | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in ' ;,="\t\r\n'):
            raise ValueError(f"bad cookie name {self.name!r}")
        if self.samesite.lower() not in _SAMESITE:
            raise ValueError(f"samesite must be one of {', '.join(_SAMESITE)}")
        if self.samesite.lower() == "none" and self.secure is False:
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

    def is_secure(self, https: bool) -> bool:
        """Whether the cookie gets ``Secure`` for a request that came over https (or not)."""
        if self.secure is not None:
            return self.secure
        return https or self.samesite.lower() == "none"

    def set_cookie(self, token: str | None, *, https: bool = True) -> str:
        """A ``Set-Cookie`` value: the token, or an expired cookie when ``token`` is None."""
        parts = [f"{self.name}={token or ''}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if token is None:
            parts.append("Max-Age=0")
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        elif self.max_age is not None:
            parts.append(f"Max-Age={int(self.max_age)}")
        if self.is_secure(https):
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class _Call:
    """One store call a handle operation needs: ``store.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Plan = Generator[_Call, Any, Any]
_MISSING: Any = object()


def anonymous_user_id() -> str:
    """A fresh user id for an anonymous session."""
    return ANONYMOUS_PREFIX + secrets.token_hex(12)


class _HandleState(MutableMapping[str, Any]):
    """What a request did to its session, and every handle operation as a plan (no I/O)."""

    def __init__(self, token: str | None, *, anonymous: bool = False, https: bool = True) -> None:
        self.token = token
        self.session: Session | None = None
        self.loaded = False
        self.changes: dict[str, Any] = {}
        self.removed: set[str] = set()
        self.cookie: Any = _MISSING  # _MISSING: leave the cookie alone
        self.allow_anonymous = anonymous
        self.https = https
        self._fresh: dict[str, Any] = {}  # data of an anonymous session not created yet

    # the data view (load first)
    def _data(self) -> dict[str, Any]:
        if not self.loaded:
            raise RuntimeError("load the session first (session.load(), awaited on ASGI)")
        if self.session is not None:
            return self.session.data
        return self._fresh

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        data = self._data()
        if self.session is None and not self.allow_anonymous:
            raise RuntimeError(
                "no session: call login(user_id) before storing data "
                "(or let the middleware create anonymous sessions: anonymous=True)"
            )
        data[key] = value
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

    def __repr__(self) -> str:
        state = "not loaded" if not self.loaded else repr(self._data())
        return f"<{type(self).__name__} user={self.user_id!r} {state}>"

    @property
    def anonymous(self) -> bool:
        """Whether this is an anonymous session (live, or created when the response starts)."""
        if self.session is None:
            return bool(self._fresh)
        return self.session.user_id.startswith(ANONYMOUS_PREFIX)

    @property
    def user_id(self) -> str | None:
        """The logged-in user; ``None`` with no session or an anonymous one."""
        if self.session is None or self.anonymous:
            return None
        return self.session.user_id

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
        self._fresh = {}
        self._loaded(session)

    def _logged_out(self) -> None:
        self.token, self.session, self.loaded, self.cookie = None, None, True, None
        self.changes.clear()
        self.removed.clear()
        self._fresh = {}

    def headers(self, policy: CookiePolicy) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.loaded or self.cookie is not _MISSING:
            out.append(("Vary", "Cookie"))
        if self.cookie is not _MISSING:
            out.append(("Set-Cookie", policy.set_cookie(self.cookie, https=self.https)))
        return out

    # ------------------------------------------------------------ plans (driven by the handles)

    def _load_plan(self) -> Plan:
        if not self.loaded:
            self._loaded((yield _Call("get", (self.token,))) if self.token else None)
        return self.session

    def _login_plan(self, user_id: UserId, data: dict[str, Any] | None, meta: dict[str, Any]) -> Plan:
        carried: dict[str, Any] = {}
        if self.allow_anonymous:
            yield from self._load_plan()
            if self.session is None or self.anonymous:
                carried = dict(self._data())  # the visitor's cart survives the login
        if self.token:
            yield _Call("destroy", (self.token,))
        token = yield _Call("create", (user_id, {**carried, **(data or {})}), meta)
        self._logged_in(token, (yield _Call("get", (token,))))
        return token

    def _logout_plan(self) -> Plan:
        if self.token:
            yield _Call("destroy", (self.token,))
        self._logged_out()

    def _rotate_plan(self) -> Plan:
        yield from self._commit_plan()
        token = (yield _Call("rotate", (self.token,))) if self.token else None
        if token is not None:
            self._logged_in(token, (yield _Call("get", (token,))))
        return token

    def _commit_plan(self) -> Plan:
        if self.session is None and self._fresh and self.allow_anonymous and self.loaded:
            token = yield _Call("create", (anonymous_user_id(), self._fresh))
            self._logged_in(token, (yield _Call("get", (token,))))
        elif self.dirty and self.token:
            if (yield _Call("update", (self.token, self.changes), {"remove": self.removed})) is None:
                self.cookie = None
            self.changes, self.removed = {}, set()


def _drive(store: Any, plan: Plan) -> Any:
    """Run a plan against a sync store."""
    try:
        call = next(plan)
        while True:
            call = plan.send(getattr(store, call.method)(*call.args, **call.kwargs))
    except StopIteration as stop:
        return stop.value


async def _drive_async(store: Any, plan: Plan) -> Any:
    """Run a plan against an asyncio store."""
    try:
        call = next(plan)
        while True:
            call = plan.send(await getattr(store, call.method)(*call.args, **call.kwargs))
    except StopIteration as stop:
        return stop.value


class SessionHandle(_HandleState):
    """The per-request session of the WSGI middleware (a lazy mapping of the session's data)."""

    def __init__(
        self, store: SessionStore, token: str | None, *, anonymous: bool = False, https: bool = True
    ) -> None:
        super().__init__(token, anonymous=anonymous, https=https)
        self._store = store

    def load(self) -> Session | None:
        """The live session (``None`` when there is none); the handle is a mapping afterwards."""
        return _drive(self._store, self._load_plan())  # type: ignore[no-any-return]

    def login(self, user_id: UserId, data: dict[str, Any] | None = None, **meta: Any) -> str:
        """A new session for ``user_id`` (the browser's previous one is revoked); its token."""
        return _drive(self._store, self._login_plan(user_id, data, meta))  # type: ignore[no-any-return]

    def logout(self) -> None:
        """Revoke the session and expire the cookie."""
        _drive(self._store, self._logout_plan())

    def rotate(self) -> str | None:
        """A new token for the same session (after saving pending changes); ``None``: no session."""
        return _drive(self._store, self._rotate_plan())  # type: ignore[no-any-return]

    def commit(self) -> None:
        """Save pending changes now (the middleware does it before the response starts)."""
        _drive(self._store, self._commit_plan())


class AsyncSessionHandle(_HandleState):
    """The per-request session of the ASGI middleware: ``await load()``, then use it as a mapping."""

    def __init__(
        self, store: AsyncSessionStore, token: str | None, *, anonymous: bool = False, https: bool = True
    ) -> None:
        super().__init__(token, anonymous=anonymous, https=https)
        self._store = store

    async def load(self) -> Session | None:
        return await _drive_async(self._store, self._load_plan())  # type: ignore[no-any-return]

    async def login(self, user_id: UserId, data: dict[str, Any] | None = None, **meta: Any) -> str:
        return await _drive_async(self._store, self._login_plan(user_id, data, meta))  # type: ignore[no-any-return]

    async def logout(self) -> None:
        await _drive_async(self._store, self._logout_plan())

    async def rotate(self) -> str | None:
        return await _drive_async(self._store, self._rotate_plan())  # type: ignore[no-any-return]

    async def commit(self) -> None:
        await _drive_async(self._store, self._commit_plan())


Scope = Any
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGISessionMiddleware:
    """``app = ASGISessionMiddleware(app, AsyncSessionStore(...))``; the app reads ``scope["session"]``
    (Starlette's ``request.session``). ``preload=True`` loads it before the app runs, so it is a
    plain mapping there; ``anonymous=True`` creates anonymous sessions on a visitor's first write."""

    def __init__(
        self,
        app: ASGIApp,
        store: AsyncSessionStore,
        policy: CookiePolicy | None = None,
        *,
        anonymous: bool = False,
        preload: bool = False,
    ) -> None:
        if not isinstance(store, AsyncSessionStore):
            raise TypeError("the ASGI middleware needs an AsyncSessionStore")
        self.app, self.store, self.policy = app, store, policy or CookiePolicy()
        self.anonymous, self.preload = anonymous, preload

    def handle(self, scope: Scope) -> AsyncSessionHandle:
        """A fresh handle for this request (what the middleware puts in ``scope["session"]``)."""
        cookie = b"; ".join(v for k, v in scope.get("headers", ()) if k.lower() == b"cookie")
        https = scope.get("scheme", "http") in ("https", "wss")
        token = self.policy.read(cookie.decode("latin-1"))
        return AsyncSessionHandle(self.store, token, anonymous=self.anonymous, https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        handle = self.handle(scope)
        scope["session"] = handle
        if self.preload:
            await handle.load()

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
    ``environ["redispatterns.session"]``. ``preload`` and ``anonymous`` as on the ASGI one."""

    def __init__(
        self,
        app: WSGIApp,
        store: SessionStore,
        policy: CookiePolicy | None = None,
        *,
        anonymous: bool = False,
        preload: bool = False,
    ) -> None:
        if not isinstance(store, SessionStore):
            raise TypeError("the WSGI middleware needs a (sync) SessionStore")
        self.app, self.store, self.policy = app, store, policy or CookiePolicy()
        self.anonymous, self.preload = anonymous, preload

    def handle(self, environ: dict[str, Any]) -> SessionHandle:
        """A fresh handle for this request (what the middleware puts in the environ)."""
        https = environ.get("wsgi.url_scheme", "http") == "https"
        token = self.policy.read(environ.get("HTTP_COOKIE"))
        return SessionHandle(self.store, token, anonymous=self.anonymous, https=https)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        handle = self.handle(environ)
        environ[WSGI_KEY] = handle
        if self.preload:
            handle.load()

        def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            handle.commit()
            return start_response(status, [*headers, *handle.headers(self.policy)], exc_info)

        return self.app(environ, wrapped)
