"""The session middleware in a real Starlette app, driven by Starlette's TestClient over http."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import redispatterns as rp
from redispatterns.http import ASGISessionMiddleware
from redispatterns.testing.plugin import Backend

MOUNT = rp.Mount(prefix="star:")


def make_app(store: rp.AsyncSessionStore, **options: Any) -> Starlette:
    async def cart(request: Request) -> JSONResponse:
        s = request.session  # Starlette's own accessor: a plain mapping once preloaded
        if request.method == "POST":
            s["cart"] = [*s.get("cart", []), request.query_params["item"]]
        if request.query_params.get("clear"):
            s.clear()
        return JSONResponse({"cart": s.get("cart", []), "keys": sorted(s), "user": s.user_id})  # type: ignore[attr-defined]

    async def login(request: Request) -> JSONResponse:
        await request.session.login(request.query_params["user"])  # type: ignore[attr-defined]
        return JSONResponse({"user": request.session.user_id})  # type: ignore[attr-defined]

    routes = [Route("/cart", cart, methods=["GET", "POST"]), Route("/login", login, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(ASGISessionMiddleware, store, **options)])


def test_request_session_is_a_mapping_and_survives_plain_http(backend: Backend) -> None:
    store = rp.AsyncSessionStore(backend.async_client(), mount=MOUNT)
    check = rp.SessionStore(backend.sync_client(), mount=MOUNT)
    with TestClient(make_app(store, anonymous=True, preload=True)) as tc:  # http://testserver
        r = tc.get("/cart")
        assert r.json() == {"cart": [], "keys": [], "user": None} and "set-cookie" not in r.headers
        r = tc.post("/cart", params={"item": "tea"})
        assert "Secure" not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        anon = tc.cookies["session"]
        r = tc.post("/cart", params={"item": "jam"})  # the client sent the cookie back
        assert r.json() == {"cart": ["tea", "jam"], "keys": ["cart"], "user": None}
        assert "set-cookie" not in r.headers and r.headers["vary"] == "Cookie"
        r = tc.post("/login", params={"user": "dana"})
        assert r.json() == {"user": "dana"} and tc.cookies["session"] != anon
        assert check.get(anon) is None
        assert tc.get("/cart").json() == {"cart": ["tea", "jam"], "keys": ["cart"], "user": "dana"}
        assert tc.get("/cart", params={"clear": "1"}).json()["keys"] == []
        assert tc.get("/cart").json() == {"cart": [], "keys": [], "user": "dana"}
        tc.portal.call(store.namespace.client.aclose)


def test_without_preload_the_handle_says_load_first(backend: Backend) -> None:
    store = rp.AsyncSessionStore(backend.async_client(), mount=MOUNT)
    app = make_app(store)
    with TestClient(app, raise_server_exceptions=True) as tc, pytest.raises(RuntimeError, match="load"):
        tc.get("/cart")
