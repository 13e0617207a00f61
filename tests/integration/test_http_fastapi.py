"""The FastAPI dependencies in a real FastAPI app, driven by its TestClient against real Redis."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import redispatterns as rp
from redispatterns.http import ASGISessionMiddleware
from redispatterns.http.fastapi import (
    RateLimit,
    RateLimitExceeded,
    SessionDep,
    UserDep,
    add_rate_limit_handler,
    user_key,
)
from redispatterns.testing.plugin import Backend

MOUNT = rp.Mount(prefix="fa:", ttl=60)


def make_app(backend: Backend, calls: list[int]) -> tuple[FastAPI, Any]:
    client = backend.async_client()
    store = rp.AsyncSessionStore(client, mount=MOUNT)
    login_limit = RateLimit(rp.AsyncSlidingWindowLimiter(3, 60, name="login", client=client, mount=MOUNT))
    api_limit = RateLimit(
        rp.AsyncTokenBucketLimiter(rate=0.001, capacity=2, name="api", client=client, mount=MOUNT),
        key=user_key,
        per_route=True,
    )

    @rp.cached(ttl=60, client=client, mount=MOUNT)
    async def product(product_id: int) -> dict[str, Any]:
        calls.append(product_id)
        return {"id": product_id, "name": f"product {product_id}"}

    app = FastAPI()
    app.add_middleware(ASGISessionMiddleware, store=store, anonymous=True)

    @app.post("/login", dependencies=[Depends(login_limit)])
    async def login(session: SessionDep, user: str) -> dict[str, Any]:
        await session.login(user)
        return {"user": session.user_id}

    @app.get("/me")
    async def me(user: UserDep) -> dict[str, str]:
        return {"user": user}

    @app.get("/api/a", dependencies=[Depends(api_limit)])
    async def api_a() -> dict[str, str]:
        return {"route": "a"}

    @app.get("/api/b", dependencies=[Depends(api_limit)])
    async def api_b() -> dict[str, str]:
        return {"route": "b"}

    # a local dependency needs the default-value form: string annotations resolve in module globals
    @app.get("/products/{product_id}")
    async def get_product(p: dict[str, Any] = Depends(product)) -> dict[str, Any]:
        return p

    @app.post("/cart")
    async def add(session: SessionDep, sku: str) -> dict[str, Any]:
        session["cart"] = [*session.get("cart", []), sku]
        return {"cart": session["cart"], "anonymous": session.anonymous}

    return app, client


def test_rate_limit_per_route_with_headers(backend: Backend) -> None:
    app, client = make_app(backend, [])
    with TestClient(app) as tc:
        for remaining in (2, 1, 0):
            r = tc.post("/login", params={"user": "ann"})
            assert r.status_code == 200, r.text
            assert r.headers["ratelimit"] == f'"3-per-60s";r={remaining};t=60'
            assert r.headers["ratelimit-policy"] == '"3-per-60s";q=3;w=60'
        r = tc.post("/login", params={"user": "ann"})
        assert r.status_code == 429 and r.json() == {"detail": "Too Many Requests"}
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["ratelimit"].startswith('"3-per-60s";r=0')
        assert tc.get("/me").json() == {"user": "ann"}  # other routes are not limited
        tc.portal.call(client.aclose)
    app, client = make_app(backend, [])
    add_rate_limit_handler(app)
    with TestClient(app) as tc:
        r = tc.post("/login", params={"user": "ann"})  # the same client address: still denied
        assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["violated-policies"] == ["3-per-60s"] and "retry-after" in r.headers
        tc.portal.call(client.aclose)


def test_rate_limit_per_user_and_per_route(backend: Backend) -> None:
    app, client = make_app(backend, [])
    with TestClient(app) as tc:  # one client (one event loop), two browsers' cookies
        tokens = {}
        for user in ("alice", "bob"):
            tc.cookies.clear()
            tc.post("/login", params={"user": user})
            tokens[user] = tc.cookies["session"]

        def as_user(user: str, path: str) -> list[int]:
            tc.cookies.set("session", tokens[user])
            return [tc.get(path).status_code for _ in range(3)]

        codes = {
            "alice a": as_user("alice", "/api/a"),
            "alice b": as_user("alice", "/api/b"),  # its own budget
            "bob a": as_user("bob", "/api/a"),  # and per user
        }
        assert codes == {k: [200, 200, 429] for k in codes}
        tc.portal.call(client.aclose)


def test_session_and_user_dependencies(backend: Backend) -> None:
    app, client = make_app(backend, [])
    with TestClient(app) as tc:
        r = tc.get("/me")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Cookie"
        assert tc.post("/cart", params={"sku": "tea"}).json() == {"cart": ["tea"], "anonymous": True}
        assert tc.post("/cart", params={"sku": "jam"}).json() == {"cart": ["tea", "jam"], "anonymous": True}
        assert tc.get("/me").status_code == 401  # anonymous is not logged in
        anon = tc.cookies["session"]
        tc.post("/login", params={"user": "eve"})
        assert tc.cookies["session"] != anon and tc.get("/me").json() == {"user": "eve"}
        assert tc.post("/cart", params={"sku": "figs"}).json() == {
            "cart": ["tea", "jam", "figs"],
            "anonymous": False,
        }
        tc.portal.call(client.aclose)


def test_a_cached_function_is_a_dependency(backend: Backend) -> None:
    calls: list[int] = []
    app, client = make_app(backend, calls)
    with TestClient(app) as tc:
        for _ in range(3):
            assert tc.get("/products/7").json() == {"id": 7, "name": "product 7"}
        assert tc.get("/products/8").json()["id"] == 8
        assert calls == [7, 8]
        tc.portal.call(client.aclose)


def test_rate_limit_checks_its_arguments(backend: Backend) -> None:
    with pytest.raises(TypeError, match="asyncio limiter"):
        RateLimit(rp.SlidingWindowLimiter(1, 1, client=backend.sync_client()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be"):
        RateLimit(rp.AsyncSlidingWindowLimiter(1, 1), key="ip")  # type: ignore[arg-type]
    assert issubclass(RateLimitExceeded, Exception)
