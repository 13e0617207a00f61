"""A small shop on FastAPI where every pattern does its real job.

* ``GET /products``, ``/products/{id}``: a cached read (``@rp.cached``) over a slow "database";
  per-client API limit (token bucket, IETF ``RateLimit`` headers).
* ``POST /login``: rate-limited per account (sliding window: 5 tries a minute), then a session.
* ``/cart``: sessions, anonymous before login; the cart survives the login (new session id).
* ``POST /checkout``: a lock per user around checkout (no double orders), then the order goes
  to a stream; a worker (consumer group) fulfils it, counts best sellers (leaderboard) and
  publishes a notification (pub/sub) that the app's subscriber collects.
* ``GET /bestsellers``, ``/notifications``, ``/settings``: the leaderboard, recent
  notifications, and KV settings (``max_cart_items``, ``banner``).
* Every pattern call is traced when OpenTelemetry is installed (``redispatterns.otel``).

``uvicorn --app-dir examples webapp.app:create_app --factory`` with ``REDIS_URL`` set, or
``make webapp`` (an embedded server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

import redispatterns as rp
from redispatterns.http import ASGISessionMiddleware
from redispatterns.http.fastapi import (
    RateLimit,
    RateLimitExceeded,
    SessionDep,
    UserDep,
    add_rate_limit_handler,
)

CATALOG: dict[int, dict[str, Any]] = {
    i: {"id": i, "name": name, "price_cents": price}
    for i, (name, price) in enumerate(
        [("tea", 450), ("jam", 620), ("bread", 380), ("honey", 990), ("coffee", 1250),
         ("cheese", 870), ("olives", 540), ("apples", 300)], start=1)
}  # fmt: skip
DB_LATENCY = 0.01  # what the cache saves on every hit
log = logging.getLogger("webapp")


class Login(BaseModel):
    user: str
    password: str


class CartItem(BaseModel):
    product_id: int
    qty: int = 1


def _console_tracing() -> Any:
    """An SDK provider printing spans, when ``WEBAPP_OTEL=console`` (else the global provider)."""
    if os.environ.get("WEBAPP_OTEL") != "console":
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def create_app(
    url: str | None = None,
    *,
    prefix: str = "shop:",
    login_limit: tuple[int, float] = (5, 60.0),
    api_rate: tuple[float, int] = (200.0, 400),
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1"),
    telemetry: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> FastAPI:
    """The app, on ``url`` (default ``$REDIS_URL``); every key under ``prefix``. Client addresses
    come from ``X-Forwarded-For`` only when the peer is one of ``trusted_proxies`` (a local load
    balancer; Locust's simulated visitors use it). ``WEBAPP_OTEL=console`` prints the spans."""
    client = rp.connect_async(url or os.environ.get("REDIS_URL"))
    mount = rp.Mount(prefix=prefix)
    sessions = rp.AsyncSessionStore(client, mount=mount, ttl=1800)
    login_guard = rp.AsyncSlidingWindowLimiter(*login_limit, name="login", client=client, mount=mount)
    api = RateLimit(rp.AsyncTokenBucketLimiter(rate=api_rate[0], capacity=api_rate[1], name="api",
                                               client=client, mount=mount),
                    trusted_proxies=trusted_proxies)  # fmt: skip
    bestsellers = rp.AsyncLeaderboard("bestsellers", client=client, mount=mount)
    orders = rp.AsyncStream("orders", maxlen=100_000, client=client, mount=mount)
    settings = rp.AsyncKV(client, mounts={"settings": rp.Mount(prefix=prefix + "settings:")})
    notes: deque[dict[str, Any]] = deque(maxlen=50)

    @rp.cached(ttl=30, client=client, mount=mount)
    async def product(product_id: int) -> dict[str, Any] | None:
        await asyncio.sleep(DB_LATENCY)  # the database round trip the cache saves
        return CATALOG.get(product_id)

    async def fulfil(worker: rp.AsyncConsumer) -> None:
        """The order worker: read a batch, count best sellers, notify, ack."""
        while True:
            try:
                batch = await worker.read(count=50, block=1.0)
                for msg in batch:
                    order = msg.fields
                    for item in order["items"]:
                        await bestsellers.submit(str(item["product_id"]), item["qty"], mode="incr")
                    await rp.publish_async("orders.fulfilled", {"order": msg.id, "user": order["user"]},
                                           client=client, mount=mount)  # fmt: skip
                if batch:
                    await worker.ack(*batch)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("order worker: %r; retrying in 1 s (unacked orders are redelivered)", exc)
                await asyncio.sleep(1.0)

    async def collect(message: rp.PubSubMessage) -> None:
        notes.append(message.data)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if telemetry:
            with contextlib.suppress(ImportError):  # the otel extra is optional
                from redispatterns import otel

                otel.instrument(
                    tracer_provider=tracer_provider or _console_tracing(), meter_provider=meter_provider
                )
        await settings.set(
            "settings", "max_cart_items", await settings.get_or("settings", "max_cart_items", 20)
        )
        worker = rp.AsyncConsumer(orders, "fulfil", f"web-{os.getpid()}")
        await worker.ensure_group()
        subscriber = rp.AsyncSubscriber(["orders.fulfilled"], client=client, mount=mount, handler=collect)
        await subscriber.start()
        task = asyncio.create_task(fulfil(worker))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await subscriber.close()
            await settings.close()
            await client.aclose()

    app = FastAPI(title="redispatterns shop", lifespan=lifespan)
    app.add_middleware(ASGISessionMiddleware, store=sessions, anonymous=True)
    add_rate_limit_handler(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/products", dependencies=[Depends(api)])
    async def products() -> list[dict[str, Any]]:
        return [p for p in await asyncio.gather(*(product(i) for i in CATALOG)) if p is not None]

    @app.get("/products/{product_id}", dependencies=[Depends(api)])
    async def show_product(product_id: int) -> dict[str, Any]:
        p = await product(product_id)
        if p is None:
            raise HTTPException(404, "no such product")
        return p

    @app.post("/login")
    async def login(body: Login, session: SessionDep) -> dict[str, Any]:
        d = await login_guard.hit(f"account:{body.user}")  # per account: guessing is slow
        if not d.allowed:
            raise RateLimitExceeded(d)
        if body.password != f"pw-{body.user}":  # a demo credential check
            raise HTTPException(401, "wrong user or password")
        await session.login(body.user)
        return {"user": body.user, "cart": session.get("cart", [])}

    @app.post("/logout")
    async def logout(session: SessionDep) -> dict[str, bool]:
        await session.logout()
        return {"ok": True}

    @app.get("/cart")
    async def cart(session: SessionDep) -> dict[str, Any]:
        return {"user": session.user_id, "cart": session.get("cart", [])}

    @app.post("/cart", dependencies=[Depends(api)])
    async def add_to_cart(item: CartItem, session: SessionDep) -> dict[str, Any]:
        if await product(item.product_id) is None:
            raise HTTPException(404, "no such product")
        items = list(session.get("cart", []))
        if len(items) >= await settings.get_or("settings", "max_cart_items", 20):
            raise HTTPException(409, "the cart is full")
        items.append({"product_id": item.product_id, "qty": item.qty})
        session["cart"] = items
        return {"cart": items}

    @app.post("/checkout")
    async def checkout(user: UserDep, session: SessionDep) -> dict[str, Any]:
        try:
            async with rp.AsyncLock(f"checkout:{user}", ttl=10, timeout=2, client=client, mount=mount):
                items = session.get("cart", [])
                if not items:
                    raise HTTPException(409, "the cart is empty")
                total = 0
                for it in items:
                    p = await product(it["product_id"])
                    total += (p or {}).get("price_cents", 0) * it["qty"]
                order_id = await orders.add({"user": user, "items": items, "total_cents": total})
                session["cart"] = []
        except rp.LockTimeout:
            raise HTTPException(409, "a checkout is already running") from None
        return {"order": order_id, "total_cents": total}

    @app.get("/bestsellers")
    async def top() -> list[dict[str, Any]]:
        return [{"product": CATALOG[int(e.member)]["name"], "sold": e.score}
                for e in await bestsellers.top(5)]  # fmt: skip

    @app.get("/notifications")
    async def notifications() -> list[dict[str, Any]]:
        return list(notes)

    @app.get("/settings")
    async def get_settings() -> dict[str, Any]:
        return {"max_cart_items": await settings.get_or("settings", "max_cart_items", 20),
                "banner": await settings.get_or("settings", "banner", "")}  # fmt: skip

    return app
