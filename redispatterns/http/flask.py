"""A Flask extension (the ``flask`` extra): Redis sessions and per-route rate limits.

>>> rpx = RedisPatterns(app, sessions=rp.SessionStore(ttl=1800), anonymous=True)   # doctest: +SKIP
>>> @app.post("/login")
... @rpx.limit(rp.SlidingWindowLimiter(5, 60, name="login"))
... def login():
...     current_session().login(request.form["user"])

``flask.session`` becomes a :class:`FlaskSession`: the session of
:class:`redispatterns.http.WSGISessionMiddleware` (loaded on first access, changed fields saved
as one update, ``login``/``logout``/``rotate``, anonymous sessions carried into a new id on
login, ``Secure`` following the request scheme) that is also Flask's ``SessionMixin``.
``limit(limiter, key=, cost=, per_route=)`` guards a view: admitted responses carry the IETF
``RateLimit`` headers, a denial answers 429 ``application/problem+json`` with ``Retry-After``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, request, session
from flask.sessions import SessionInterface, SessionMixin

from ..ratelimit import Decision, MultiLimiter
from ..session import SessionStore
from .ratelimit import _networks, _problem, client_address
from .session import CookiePolicy, SessionHandle

__all__ = ["FlaskSession", "RedisPatterns", "current_session", "ip_key", "user_key"]

F = TypeVar("F", bound=Callable[..., Any])
KeyFn = Callable[[Request], "str | None"]
EXTENSION = "redispatterns"


class FlaskSession(SessionHandle, SessionMixin):
    """``flask.session``: a :class:`SessionHandle` that loads itself on first access."""

    def _data(self) -> dict[str, Any]:
        if not self.loaded:
            self.load()
        return super()._data()

    @property
    def user_id(self) -> str | None:
        self._data()
        return SessionHandle.user_id.fget(self)  # type: ignore[attr-defined,no-any-return]

    @property
    def anonymous(self) -> bool:
        self._data()
        return SessionHandle.anonymous.fget(self)  # type: ignore[attr-defined,no-any-return]


class _Interface(SessionInterface):
    def __init__(self, ext: RedisPatterns, store: SessionStore) -> None:
        self.ext, self.store = ext, store

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        token = self.ext.policy.read(request.headers.get("Cookie"))
        return FlaskSession(self.store, token, anonymous=self.ext.anonymous, https=request.scheme == "https")

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        handle = cast(FlaskSession, session)
        handle.commit()
        for name, value in handle.headers(self.ext.policy):
            if name == "Vary":
                response.vary.add(value)
            else:
                response.headers.add(name, value)


def current_session() -> FlaskSession:
    """``flask.session``, typed as what it is (``login``, ``logout``, ``user_id``, ...)."""
    if not isinstance(session._get_current_object(), FlaskSession):  # type: ignore[attr-defined]
        raise RuntimeError("no Redis session: RedisPatterns(app, sessions=SessionStore(...))")
    return cast(FlaskSession, session._get_current_object())  # type: ignore[attr-defined]


def ip_key(req: Request) -> str:
    """The default subject: the client address (``X-Forwarded-For`` only from trusted proxies)."""
    ext: RedisPatterns = current_app.extensions[EXTENSION]
    return "ip:" + client_address(req.remote_addr, req.headers.get("X-Forwarded-For"), ext.trusted)


def user_key(req: Request) -> str:
    """The logged-in user (``user:<id>``), else the client address: per-user limits."""
    s = session._get_current_object()  # type: ignore[attr-defined]
    if isinstance(s, FlaskSession) and s.user_id is not None:
        return f"user:{s.user_id}"
    return ip_key(req)


class RedisPatterns:
    """The extension: ``RedisPatterns(app, sessions=...)`` or ``ext.init_app(app)`` later."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        sessions: SessionStore | None = None,
        policy: CookiePolicy | None = None,
        anonymous: bool = False,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        if sessions is not None and not isinstance(sessions, SessionStore):
            raise TypeError("sessions= needs a (sync) SessionStore")
        self.sessions, self.policy = sessions, policy or CookiePolicy()
        self.anonymous, self.trusted = anonymous, _networks(trusted_proxies)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: its session interface (when ``sessions`` is set) and extension."""
        app.extensions[EXTENSION] = self
        if self.sessions is not None:
            app.session_interface = _Interface(self, self.sessions)

    def limit(
        self, limiter: MultiLimiter, *, key: KeyFn | None = None, cost: int = 1, per_route: bool = False
    ) -> Callable[[F], F]:
        """Guard a view with ``limiter`` (sync); ``key(request)`` picks the subject (None: exempt)."""
        if not isinstance(limiter, MultiLimiter):
            raise TypeError("limit() needs a sync limiter (e.g. SlidingWindowLimiter)")
        if key is not None and not callable(key):
            raise TypeError("key must be a function of the request returning a str (or None to skip)")
        subject_of: KeyFn = key or ip_key

        def decorate(view: F) -> F:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                subject = subject_of(request)
                if subject is None:
                    return view(*args, **kwargs)
                if per_route:
                    subject = f"{request.method} {request.url_rule} {subject}"
                d: Decision = limiter.hit(subject, cost)
                if not d.allowed:
                    return Response(
                        _problem(d), 429, headers=d.headers(), mimetype="application/problem+json"
                    )
                response = current_app.make_response(view(*args, **kwargs))
                response.headers.update(d.headers())
                return response

            return cast(F, guarded)

        return decorate
