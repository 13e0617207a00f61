"""Tour: rate limiters — exact sliding window, token bucket, several limits in one round trip."""

from __future__ import annotations

import threading
from collections.abc import Callable

ORDER = 30
TITLE = "Rate limiting: exact sliding window, token bucket, atomic multi-limit, HTTP headers"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.ratelimit import MultiLimiter, Policy, SlidingWindowLimiter, TokenBucketLimiter

    client = rp.connect(url)
    mount = rp.Mount(prefix="demo:")
    limiter = SlidingWindowLimiter(limit=100, window=60, client=client, mount=mount)
    limiter.reset("user:42")
    counts = [0] * 8

    def worker(i: int) -> None:
        counts[i] = sum(bool(limiter.hit("user:42")) for _ in range(200))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say(f"8 threads x 200 hits on a 100/60s sliding window: {sum(counts)} admitted (exactly the limit).")
    d = limiter.hit("user:42")
    say(f"  the next hit: allowed={d.allowed}, retry in {d.retry_after:.2f}s (from the oldest entry)")
    say(f"  HTTP fields: {d.headers()}")
    key = limiter.keys("user:42")[0]
    size = client.memory_usage(key, samples=0)
    say(f"  one sorted set per subject: {size} bytes for 100 entries, TTL {client.pttl(key)} ms (the window)")

    bucket = TokenBucketLimiter(rate=10, capacity=20, client=client, mount=mount)
    bucket.reset("api-key:7")
    burst = sum(bool(bucket.hit("api-key:7")) for _ in range(30))
    key = bucket.keys("api-key:7")[0]
    say(f"token bucket 10/s, capacity 20: a burst of 30 admits {burst}; state is one integer "
        f"({client.get(key)!r} µs), {client.memory_usage(key, samples=0)} bytes")  # fmt: skip

    multi = MultiLimiter(
        [Policy.sliding(3, 1, name="per-second"), Policy.token_bucket(1000, per=3600, name="hourly")],
        client=client,
        mount=mount,
    )
    multi.reset("tenant:9")
    results = [multi.hit("tenant:9") for _ in range(5)]
    left = multi.peek("tenant:9").policies[1].remaining
    say(f"3/s AND 1000/h in one script: {[r.allowed for r in results]}; violated {results[-1].violated}; "
        f"hourly budget left {left} (denials cost nothing)")  # fmt: skip
    for lim, subject in ((limiter, "user:42"), (bucket, "api-key:7"), (multi, "tenant:9")):
        lim.reset(subject)
