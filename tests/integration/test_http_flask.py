"""The Flask extension in a real Flask app, driven by Flask's test client against real Redis."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, request, session

import redispatterns as rp
from redispatterns.http.flask import FlaskSession, RedisPatterns, current_session, user_key
from redispatterns.testing.plugin import Backend

MOUNT = rp.Mount(prefix="fl:")


def make_app(backend: Backend) -> tuple[Flask, rp.SessionStore]:
    client = backend.sync_client()
    store = rp.SessionStore(client, mount=MOUNT)
    app = Flask(__name__)
    ext = RedisPatterns(sessions=store, anonymous=True)
    ext.init_app(app)
    login_limit = rp.SlidingWindowLimiter(3, 60, name="login", client=client, mount=MOUNT)
    api_limit = rp.TokenBucketLimiter(rate=0.001, capacity=2, name="api", client=client, mount=MOUNT)

    @app.post("/cart")
    def add() -> dict[str, Any]:
        session["cart"] = [*session.get("cart", []), request.args["sku"]]
        return {"cart": session["cart"], "anonymous": current_session().anonymous}

    @app.get("/cart")
    def show() -> dict[str, Any]:
        return {"cart": session.get("cart", []), "user": current_session().user_id}

    @app.post("/login")
    @ext.limit(login_limit)
    def login() -> dict[str, Any]:
        current_session().login(request.args["user"])
        return {"user": current_session().user_id}

    @app.post("/logout")
    def logout() -> dict[str, Any]:
        current_session().logout()
        return {}

    @app.get("/api/<name>")
    @ext.limit(api_limit, key=user_key, per_route=True)
    def api(name: str) -> dict[str, Any]:
        return {"name": name}

    @app.get("/search")
    @ext.limit(api_limit, key=user_key, per_route=True)
    def search() -> dict[str, Any]:
        return {}

    @app.get("/static")
    def static_page() -> str:
        return "no session here"

    return app, store


def test_sessions_through_the_extension(backend: Backend) -> None:
    app, store = make_app(backend)
    tc = app.test_client()  # http://localhost: the cookie must not be Secure to come back
    r = tc.get("/static")
    assert "Set-Cookie" not in r.headers and "Cookie" not in r.headers.get("Vary", "")
    r = tc.post("/cart", query_string={"sku": "tea"})
    assert r.json == {"cart": ["tea"], "anonymous": True}
    assert "Secure" not in r.headers["Set-Cookie"] and "Cookie" in r.headers["Vary"]
    anon = tc.get_cookie("session")
    assert anon is not None
    assert tc.post("/cart", query_string={"sku": "jam"}).json == {"cart": ["tea", "jam"], "anonymous": True}
    assert tc.post("/login", query_string={"user": "fay"}).json == {"user": "fay"}
    auth = tc.get_cookie("session")
    assert auth is not None and auth.value != anon.value and store.get(anon.value) is None
    assert tc.get("/cart").json == {"cart": ["tea", "jam"], "user": "fay"}
    assert [s.user_id for s in store.sessions("fay")] == ["fay"]
    r = tc.post("/logout")
    assert "Max-Age=0" in r.headers["Set-Cookie"] and store.get(auth.value) is None
    assert tc.get("/cart").json == {"cart": [], "user": None}


def test_limits_per_route_and_user(backend: Backend) -> None:
    app, _ = make_app(backend)
    tc = app.test_client()
    codes = []
    for _ in range(4):
        r = tc.post("/login", query_string={"user": "gus"})
        codes.append(r.status_code)
    assert codes == [200, 200, 200, 429]
    assert r.headers["Content-Type"] == "application/problem+json" and int(r.headers["Retry-After"]) >= 1
    assert r.json is not None and r.json["violated-policies"] == ["3-per-60s"]
    ok = tc.get("/api/a")
    assert ok.headers["RateLimit"].startswith('"') and ok.headers["RateLimit-Policy"]
    assert [tc.get("/api/a").status_code for _ in range(2)] == [200, 429]
    assert tc.get("/api/b").status_code == 429  # one route (rule /api/<name>), one budget
    assert [tc.get("/search").status_code for _ in range(3)] == [200, 200, 429]  # its own budget
    other = app.test_client()  # a visitor from the same address: keyed by address, not by gus
    assert other.get("/api/a").status_code == 200
    assert tc.get("/api/a").status_code == 429


def test_guards() -> None:
    with pytest.raises(TypeError, match="SessionStore"):
        RedisPatterns(sessions=rp.AsyncSessionStore(mount=MOUNT))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync limiter"):
        RedisPatterns().limit(rp.AsyncSlidingWindowLimiter(1, 1))  # type: ignore[arg-type]
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        current_session()
        return ""

    assert app.test_client().get("/").status_code == 500  # no Redis sessions configured
    assert issubclass(FlaskSession, rp.http.SessionHandle)
