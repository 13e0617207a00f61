"""Tour: @cached hits in one GET, stampedes computed once, stale-while-revalidate, fail-open."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

ORDER = 10
TITLE = "Cache: one GET per hit, one computation per stampede, fail-open"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.cache import CircuitBreaker, cached, invalidate_tags
    from redispatterns.testing.servers import free_port

    client = rp.connect(url)
    mount = rp.Mount(prefix="demo:", ttl=60)
    calls: list[int] = []

    @cached(mount=mount, client=client, tags=["user:{user_id}"], name="demo.get_user")
    def get_user(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        time.sleep(0.2)
        return {"id": user_id, "name": "Ada"}

    get_user.invalidate(42)
    threads = [threading.Thread(target=get_user, args=(42,)) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say(f"100 threads asked for user 42 at once: the function ran {len(calls)} time(s).")
    say(f"  key {get_user.key(42)!r}: value, lease and tag sets share one hash-tag bucket.")
    say(f"  stats: {get_user.stats}")

    @cached(ttl=0.2, stale_ttl=30, jitter=0, early_refresh=0, mount=mount, client=client, name="demo.price")
    def price(sku: str) -> float:
        calls.append(0)
        time.sleep(0.1)
        return 9.99 + len(calls)

    price.invalidate("A")
    first = price("A")
    time.sleep(0.3)
    refresher = threading.Thread(target=price, args=("A",))
    refresher.start()  # the first caller after the soft TTL takes the lease and recomputes...
    time.sleep(0.03)
    t0 = time.perf_counter()
    during = price("A")  # ...while this one gets the stale value at once
    waited = (time.perf_counter() - t0) * 1000
    refresher.join()
    say(f"price('A') = {first}; 0.3 s later (past its 0.2 s soft TTL) one caller refreshes it,")
    say(f"  a caller meanwhile gets the stale {during} in {waited:.1f} ms; afterwards: {price('A')}")
    n = invalidate_tags("user:42", mount=mount, client=client)
    say(f"invalidate_tags('user:42') deleted {n} entry; peek: {get_user.peek(42)!r}")

    dead = rp.connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)

    @cached(ttl=60, client=dead, breaker=CircuitBreaker(threshold=2, reset_after=30), name="demo.sq")
    def square(x: int) -> int:
        return x * x

    quiet = logging.getLogger("redispatterns.cache")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the tour narrates what the log would say
    t0 = time.perf_counter()
    out = [square(i) for i in range(2)]
    t1 = time.perf_counter()
    out += [square(i) for i in range(2, 1002)]
    t2 = time.perf_counter()
    say(f"Redis unreachable: results still flow ({out[:4]}...), breaker {square.stats.breaker_state};")
    quiet.setLevel(level)
    say(f"  first 2 calls {1000 * (t1 - t0):.1f} ms, then {1e6 * (t2 - t1) / 1000:.1f} µs per call")
