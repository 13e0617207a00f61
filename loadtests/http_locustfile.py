"""Locust over HTTP: visitors of the example shop (``examples/webapp``).

``make loadtest`` starts the service and runs this; by hand:
``locust -f loadtests/http_locustfile.py --host http://127.0.0.1:8000``.

Each simulated visitor comes through a "load balancer" (``X-Forwarded-For`` with its own
address; the service trusts loopback proxies), so per-client limits apply per visitor.
``Shopper``: browses, fills a cart anonymously, logs in (the cart comes along), checks out,
looks at best sellers and notifications. ``Guesser``: tries passwords until the per-account
limit answers 429: those 429s (and the 401s before them) are the intended outcome, reported
under their own names and not as failures.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

_ids = itertools.count(1)


class Visitor(FastHttpUser):
    abstract = True
    wait_time = between(0.02, 0.2)

    def on_start(self) -> None:
        n = next(_ids)
        self.username = f"{type(self).__name__.lower()}-{n}-{random.randrange(1 << 30):x}"
        self.via = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.via, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self.via, **kw)


class Shopper(Visitor):
    weight = 12

    def on_start(self) -> None:
        super().on_start()
        self.logged_in = False
        self.cart = 0

    @task(6)
    def product(self) -> None:
        self.get(f"/products/{random.randint(1, 8)}", name="/products/[id]")

    @task(2)
    def catalog(self) -> None:
        self.get("/products")

    @task(3)
    def add_to_cart(self) -> None:
        r = self.post("/cart", json={"product_id": random.randint(1, 8), "qty": random.randint(1, 3)})
        if r.ok:
            self.cart += 1

    @task(2)
    def cart_view(self) -> None:
        self.get("/cart")

    @task(2)
    def checkout(self) -> None:
        if not self.logged_in:
            body: dict[str, Any] = {"user": self.username, "password": f"pw-{self.username}"}
            self.logged_in = self.post("/login", json=body).ok
            return
        if self.cart and self.post("/checkout").ok:
            self.cart = 0

    @task(1)
    def bestsellers(self) -> None:
        self.get("/bestsellers")

    @task(1)
    def notifications(self) -> None:
        self.get("/notifications")


class Guesser(Visitor):
    """Guesses a password: 401 until the per-account limit (5 a minute) answers 429."""

    weight = 1
    wait_time = between(0.5, 1.0)

    @task
    def guess(self) -> None:
        body = {"user": "victim", "password": f"guess-{random.randrange(1 << 30)}"}
        with self.post("/login", json=body, catch_response=True, name="/login (guess)") as r:
            if r.status_code == 429:
                r.request_meta["name"] = "/login (guess, limited: 429)"
                r.success()
            elif r.status_code == 401:
                r.success()
            else:
                r.failure(f"unexpected {r.status_code}")
