"""The example web service (examples/webapp) end to end: a visitor's journey through every
pattern, with FastAPI's TestClient, on a real server, with its spans exported."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("opentelemetry.sdk")

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redispatterns import otel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from webapp.app import create_app


def wait_for(fn: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_visitor_shops_through_every_pattern(standalone_url: str) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(standalone_url, login_limit=(3, 60.0), tracer_provider=provider)
    try:
        with TestClient(app) as web:
            assert web.get("/health").json() == {"status": "ok"}
            r = web.get("/products/2")
            assert r.json()["name"] == "jam" and r.headers["ratelimit-policy"]
            assert len(web.get("/products").json()) == 8
            assert web.get("/products/99").status_code == 404
            # an anonymous cart, kept across the login
            assert web.post("/cart", json={"product_id": 2, "qty": 2}).json()["cart"] == [
                {"product_id": 2, "qty": 2}
            ]
            assert web.post("/checkout").status_code == 401
            anon = web.cookies["session"]
            assert web.post("/login", json={"user": "ann", "password": "nope"}).status_code == 401
            r = web.post("/login", json={"user": "ann", "password": "pw-ann"})
            assert r.json() == {"user": "ann", "cart": [{"product_id": 2, "qty": 2}]}
            assert web.cookies["session"] != anon
            web.post("/cart", json={"product_id": 4})
            r = web.post("/checkout")
            assert r.status_code == 200 and r.json()["total_cents"] == 2 * 620 + 990
            assert web.get("/cart").json() == {"user": "ann", "cart": []}
            assert web.post("/checkout").status_code == 409  # empty cart
            # the worker fulfils the order: best sellers and a notification
            top = wait_for(lambda: web.get("/bestsellers").json())
            assert top == [{"product": "jam", "sold": 2}, {"product": "honey", "sold": 1}]
            notes = wait_for(lambda: web.get("/notifications").json())
            assert notes and notes[0]["user"] == "ann"
            assert web.get("/settings").json() == {"max_cart_items": 20, "banner": ""}
            # guessing a password hits the per-account limit: intended 429s
            codes = [web.post("/login", json={"user": "bob", "password": "x"}).status_code for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            r = web.post("/login", json={"user": "bob", "password": "pw-bob"})
            assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
            assert web.post("/logout").json() == {"ok": True}
            assert web.post("/checkout").status_code == 401
    finally:
        otel.uninstrument()
    names = {s.name for s in spans.get_finished_spans()}
    assert {"cache.get", "ratelimit.hit", "session.get", "lock.acquire", "streams.add",
            "leaderboard.submit", "pubsub.publish", "kv.op_get_or"} <= names, names  # fmt: skip
