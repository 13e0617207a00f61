"""Wrong user code around streams: each marked line must be a mypy error."""

from __future__ import annotations

import redispatterns as rp

orders = rp.Stream("orders")
orders.add({"n": 1}, delay="soon")  # E: Argument "delay" to "add" of "Stream" has incompatible type
worker = rp.Consumer(orders, "g", concurrency="eight")  # E: Argument "concurrency" to "Consumer"
worker.run(42)  # E: Argument 1 to "run" of "Consumer" has incompatible type
ids: list[int] = orders.add_many([{"n": 1}])  # E: Incompatible types in assignment
rp.Backoff.exponential("1s", 5)  # E: Argument 1 to "exponential" of "Backoff"
