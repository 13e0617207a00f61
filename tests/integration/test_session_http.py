"""Cookie middlewares round-tripping through tiny real ASGI and WSGI apps (no framework)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from typing import Any
from urllib.parse import parse_qs
from wsgiref.util import setup_testing_defaults

import pytest

import redispatterns as rp
from redispatterns.http import ASGISessionMiddleware, CookiePolicy, WSGISessionMiddleware
from redispatterns.session import AsyncSessionStore, Session, SessionStore
from redispatterns.testing.plugin import Backend

MOUNT = rp.Mount(prefix="web:")


def cookie_of(headers: list[tuple[str, str]]) -> str | None:
    values = [v for k, v in headers if k.lower() == "set-cookie"]
    assert len(values) <= 1
    return values[0] if values else None


def token_in(set_cookie: str) -> str:
    return set_cookie.split(";")[0].split("=", 1)[1]


# --------------------------------------------------------------------------- ASGI


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    sess = scope["session"]
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    out: dict[str, Any] = {}
    if path == "/login":
        await sess.login("alice", {"n": 0}, ip=scope["client"][0], user_agent="test-agent")
    elif path == "/incr":
        if await sess.load() is not None:
            sess["n"] += 1
    elif path == "/set":
        await sess.load()
        sess[query["k"][0]] = query["v"][0]
    elif path == "/drop":
        await sess.load()
        del sess["n"]
    elif path == "/rotate":
        await sess.load()
        out["rotated"] = await sess.rotate() is not None
    elif path == "/logout":
        await sess.logout()
    if sess.loaded:
        out["data"] = dict(sess)
        out["user"] = sess.user_id
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": json.dumps(out).encode()})


async def call_asgi(
    app: Any, path: str, cookie: str | None = None, scheme: str = "https"
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    path, _, qs = path.partition("?")
    headers = [(b"host", b"test")] + ([(b"cookie", f"other=1; session={cookie}".encode())] if cookie else [])
    scope = {"type": "http", "method": "GET", "path": path, "query_string": qs.encode(), "headers": headers,
             "client": ("10.1.2.3", 5555), "scheme": scheme}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    hdrs = [(k.decode(), v.decode()) for k, v in sent[0]["headers"]]
    return hdrs, json.loads(sent[1]["body"])


def test_asgi_round_trip(backend: Backend) -> None:
    loads: list[str] = []

    def on_get(s: Session) -> Session:
        loads.append(s.id)
        return s

    async def body() -> None:
        store = AsyncSessionStore(backend.async_client(), mount=MOUNT, on_get=on_get)
        app = ASGISessionMiddleware(asgi_app, store)
        hdrs, out = await call_asgi(app, "/static")
        assert cookie_of(hdrs) is None and ("Vary", "Cookie") not in hdrs and loads == []
        hdrs, out = await call_asgi(app, "/login")
        set_cookie = cookie_of(hdrs)
        assert set_cookie is not None
        assert set_cookie.endswith("Path=/; Secure; HttpOnly; SameSite=Lax") and ("Vary", "Cookie") in hdrs
        tok = token_in(set_cookie)
        assert out == {"data": {"n": 0}, "user": "alice"}
        for expected in (1, 2):
            hdrs, out = await call_asgi(app, "/incr", tok)
            assert out["data"] == {"n": expected} and cookie_of(hdrs) is None
        hdrs, out = await call_asgi(app, "/static", tok)
        assert cookie_of(hdrs) is None and out == {}  # untouched: no Redis call
        # concurrent requests writing different fields lose nothing
        await asyncio.gather(*(call_asgi(app, f"/set?k=f{i}&v={i}", tok) for i in range(12)))
        hdrs, out = await call_asgi(app, "/drop", tok)
        assert out["data"] == {f"f{i}": str(i) for i in range(12)}
        (info,) = await store.sessions("alice")
        assert info.ip == "10.1.2.3" and info.user_agent == "test-agent"
        hdrs, out = await call_asgi(app, "/rotate", tok)
        new = token_in(cookie_of(hdrs) or "")
        assert out["rotated"] and new != tok and await store.get(tok) is None
        hdrs, out = await call_asgi(app, "/logout", new)
        assert "Max-Age=0" in (cookie_of(hdrs) or "")
        hdrs, out = await call_asgi(app, "/incr", new)  # a stale cookie is cleared
        assert "Max-Age=0" in (cookie_of(hdrs) or "") and out == {"data": {}, "user": None}
        hdrs, out = await call_asgi(app, "/incr", "not-a-token")  # garbage never reaches Redis
        assert cookie_of(hdrs) is None and out == {"data": {}, "user": None}
        passthrough: list[Any] = []

        async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
            passthrough.append("session" in scope)

        await ASGISessionMiddleware(lifespan_app, store)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
        assert passthrough == [False]
        await store.close()

    asyncio.run(body())


# --------------------------------------------------------------------------- WSGI


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    sess = environ["redispatterns.session"]
    path, query = environ["PATH_INFO"], parse_qs(environ.get("QUERY_STRING", ""))
    out: dict[str, Any] = {}
    if path == "/login":
        sess.login("bob", {"n": 0})
    elif path == "/incr":
        if sess.load() is not None:
            sess["n"] += 1
    elif path == "/set":
        sess.load()
        sess[query["k"][0]] = query["v"][0]
    elif path == "/rotate":
        sess.load()
        out["rotated"] = sess.rotate() is not None
    elif path == "/logout":
        sess.logout()
    if sess.loaded:
        out["data"] = dict(sess)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]


def call_wsgi(
    app: Any, path: str, cookie: str | None = None, scheme: str = "http"
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    path, _, qs = path.partition("?")
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": qs, "wsgi.input": io.BytesIO(),
                               "wsgi.url_scheme": scheme}  # fmt: skip
    if cookie:
        environ["HTTP_COOKIE"] = f"session={cookie}"
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return lambda data: None

    body = b"".join(app(environ, start_response))
    assert got["status"] == "200 OK"
    return got["headers"], json.loads(body)


def test_wsgi_round_trip(backend: Backend) -> None:
    store = SessionStore(backend.sync_client(), mount=MOUNT)
    app = WSGISessionMiddleware(wsgi_app, store, CookiePolicy(name="session", secure=False, max_age=3600))
    hdrs, out = call_wsgi(app, "/static")
    assert cookie_of(hdrs) is None and out == {}
    hdrs, out = call_wsgi(app, "/login")
    set_cookie = cookie_of(hdrs) or ""
    assert "Max-Age=3600" in set_cookie and "Secure" not in set_cookie and "HttpOnly" in set_cookie
    tok = token_in(set_cookie)
    hdrs, out = call_wsgi(app, "/incr", tok)
    assert out == {"data": {"n": 1}}
    threads = [threading.Thread(target=call_wsgi, args=(app, f"/set?k=f{i}&v={i}", tok)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hdrs, out = call_wsgi(app, "/incr", tok)
    assert out == {"data": {"n": 2, **{f"f{i}": str(i) for i in range(8)}}}
    # login again from a browser that already has a session: the old token dies (no fixation)
    hdrs, out = call_wsgi(app, "/login", tok)
    tok2 = token_in(cookie_of(hdrs) or "")
    assert tok2 != tok and store.get(tok) is None
    hdrs, out = call_wsgi(app, "/rotate", tok2)
    tok3 = token_in(cookie_of(hdrs) or "")
    assert out["rotated"] and store.get(tok2) is None and store.get(tok3) is not None
    hdrs, out = call_wsgi(app, "/logout", tok3)
    assert "Max-Age=0" in (cookie_of(hdrs) or "") and store.get(tok3) is None
    assert store.sessions("bob") == []


def test_handle_guards_and_policy_checks(backend: Backend) -> None:
    store = SessionStore(backend.sync_client(), mount=MOUNT)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        sess = environ["redispatterns.session"]
        with pytest.raises(RuntimeError, match="load the session first"):
            sess["x"]
        assert sess.load() is None
        with pytest.raises(RuntimeError, match="login"):
            sess["x"] = 1
        assert len(sess) == 0 and sess.rotate() is None
        start_response("200 OK", [])
        return [b"{}"]

    call_wsgi(WSGISessionMiddleware(app, store), "/")
    with pytest.raises(TypeError, match="AsyncSessionStore"):
        ASGISessionMiddleware(asgi_app, store)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SessionStore"):
        WSGISessionMiddleware(wsgi_app, AsyncSessionStore(mount=MOUNT))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Secure"):
        CookiePolicy(samesite="none", secure=False)
    with pytest.raises(ValueError, match="cookie name"):
        CookiePolicy(name="a b")
    p = CookiePolicy(domain="example.com", samesite="strict")
    assert p.set_cookie("t") == "session=t; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Strict"
    assert p.read('x=1; session="' + "A" * 43 + '"') == "A" * 43
    assert p.read("session=short") is None and p.read(None) is None and p.read("nothing") is None


# --------------------------------------------------------------------------- Secure, anonymous


def test_secure_follows_the_request_scheme_unless_set() -> None:
    auto, on, off = CookiePolicy(), CookiePolicy(secure=True), CookiePolicy(secure=False)
    assert "Secure" in auto.set_cookie("t", https=True) and "Secure" not in auto.set_cookie("t", https=False)
    assert "Secure" in on.set_cookie("t", https=False) and "Secure" not in off.set_cookie("t", https=True)
    assert "Secure" in CookiePolicy(samesite="none").set_cookie("t", https=False)  # browsers demand it


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_middlewares_mark_cookies_secure_only_over_https(backend: Backend, scheme: str) -> None:
    store = SessionStore(backend.sync_client(), mount=MOUNT)
    hdrs, _ = call_wsgi(WSGISessionMiddleware(wsgi_app, store), "/login", scheme=scheme)
    assert ("Secure" in (cookie_of(hdrs) or "")) is (scheme == "https")

    async def body() -> None:
        astore = AsyncSessionStore(backend.async_client(), mount=MOUNT)
        hdrs, _ = await call_asgi(ASGISessionMiddleware(asgi_app, astore), "/login", scheme=scheme)
        assert ("Secure" in (cookie_of(hdrs) or "")) is (scheme == "https")
        always = ASGISessionMiddleware(asgi_app, astore, CookiePolicy(secure=True))
        hdrs, _ = await call_asgi(always, "/login", scheme=scheme)
        assert "Secure" in (cookie_of(hdrs) or "")

    asyncio.run(body())


def shop_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A preloaded session used as a plain mapping: a cart before login, kept across it."""
    sess = environ["redispatterns.session"]
    path, query = environ["PATH_INFO"], parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/add":
        sess["cart"] = [*sess.get("cart", []), query["item"][0]]
    elif path == "/login":
        sess.login("carol", {"greeting": "hi"})
    elif path == "/logout":
        sess.logout()
    out = {"cart": sess.get("cart", []), "user": sess.user_id, "anonymous": sess.anonymous, "n": len(sess)}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(out).encode()]


def test_anonymous_sessions_become_authenticated_on_login(backend: Backend) -> None:
    store = SessionStore(backend.sync_client(), mount=MOUNT)
    app = WSGISessionMiddleware(shop_wsgi, store, anonymous=True, preload=True)
    hdrs, out = call_wsgi(app, "/cart")  # a visitor who writes nothing gets no session
    assert cookie_of(hdrs) is None and out == {"cart": [], "user": None, "anonymous": False, "n": 0}
    hdrs, out = call_wsgi(app, "/add?item=tea")
    anon = token_in(cookie_of(hdrs) or "")
    assert "Secure" not in (cookie_of(hdrs) or "")  # plain http: the browser sends it back
    assert out == {"cart": ["tea"], "user": None, "anonymous": True, "n": 1}
    hdrs, out = call_wsgi(app, "/add?item=jam", anon)
    assert cookie_of(hdrs) is None and out["cart"] == ["tea", "jam"] and out["anonymous"]
    session = store.get(anon)
    assert session is not None and session.user_id.startswith(rp.http.session.ANONYMOUS_PREFIX)
    hdrs, out = call_wsgi(app, "/login", anon)
    auth = token_in(cookie_of(hdrs) or "")
    assert auth != anon and store.get(anon) is None  # the id is rotated: no fixation
    assert out == {"cart": ["tea", "jam"], "user": "carol", "anonymous": False, "n": 2}
    logged_in = store.get(auth)
    assert logged_in is not None and logged_in.data == {"cart": ["tea", "jam"], "greeting": "hi"}
    assert [s.id for s in store.sessions("carol")] == [logged_in.id]
    hdrs, out = call_wsgi(app, "/logout", auth)
    assert "Max-Age=0" in (cookie_of(hdrs) or "") and out["cart"] == [] and store.get(auth) is None
    # without anonymous=True, nothing is created for a visitor
    plain = WSGISessionMiddleware(shop_wsgi, store, preload=True)
    with pytest.raises(RuntimeError, match="anonymous=True"):
        call_wsgi(plain, "/add?item=tea")
