"""Rate limiting: an exact sliding window, a token bucket, several limits at once, a decorator,
and a WSGI endpoint guarded by the middleware (driven in-process, no web server needed).

REDIS_URL=redis://localhost:6379/0 python examples/ratelimit.py
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults

import redispatterns as rp
from redispatterns.http import WSGIRateLimitMiddleware
from redispatterns.ratelimit import (
    AsyncTokenBucketLimiter,
    MultiLimiter,
    Policy,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    rate_limited,
)

MOUNT = rp.Mount(prefix="example:")


def sliding_window() -> None:
    limiter = SlidingWindowLimiter("3/minute", mount=MOUNT)  # never more than 3 in any 60 s
    limiter.reset("user:42")
    for i in range(4):
        d = limiter.hit("user:42")
        outcome = f"admitted, {d.remaining} left" if d else f"denied, retry in {d.retry_after:.0f}s"
        print(f"hit {i + 1}: {outcome}")
    print("headers of the denial:", d.headers())
    print("peek changes nothing:", limiter.peek("user:42").remaining, "left")
    too_big = limiter.peek("user:43", cost=5)  # more than the limit: no wait would ever admit it
    print(f"a cost of 5 against a limit of 3: allowed={too_big.allowed}, "
          f"{'never admissible' if too_big.retry_after is None else 'admissible later'}, "
          f"Retry-After header present: {'Retry-After' in too_big.headers()}")  # fmt: skip


def token_bucket() -> None:
    bucket = TokenBucketLimiter("5/second", capacity=10, mount=MOUNT)  # bursts of 10, then 5 per second
    bucket.reset("api-key:abc")
    admitted = sum(bool(bucket.hit("api-key:abc")) for _ in range(15))
    print(f"token bucket: {admitted} of 15 admitted at once (the burst)")


def several_limits() -> None:
    limiter = MultiLimiter("2/second;1000/day", mount=MOUNT, name="tenants")  # both must admit
    limiter.reset("tenant:7")
    decisions = [limiter.hit("tenant:7") for _ in range(3)]
    print("multi-limit:", [d.allowed for d in decisions], "violated:", decisions[-1].violated)
    print("  the denial cost nothing daily:", limiter.peek("tenant:7").policies[1].remaining, "left today")
    named = MultiLimiter([Policy.sliding(2, 1, name="per-second"), Policy.fixed(1000, 86400, name="daily")],
                         mount=MOUNT)  # fmt: skip
    print(
        "  or named policies, for the HTTP fields:",
        named.policies[0].header_item(),
        named.policies[1].header_item(),
    )


def decorator() -> None:
    @rate_limited("1/minute", key=lambda user: f"user:{user}")  # a sync limiter of its own, per user
    def build_report(user: int) -> str:
        return f"report for {user}"

    build_report.limiter.reset("user:1")  # the limiter the rate string built
    print(build_report(1))
    try:
        build_report(1)
    except rp.RateLimited as exc:
        print(f"second report refused: retry in {exc.retry_after:.0f}s")


def guarded_endpoint() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    limiter = SlidingWindowLimiter(2, 60, mount=MOUNT, name="http")
    limiter.reset("ip:192.0.2.10")
    guarded = WSGIRateLimitMiddleware(app, limiter)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=dict(headers))

    for _ in range(3):
        environ: dict[str, Any] = {"REMOTE_ADDR": "192.0.2.10", "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        body = b"".join(guarded(environ, start_response))
        headers = seen["headers"]
        print(f"GET / -> {seen['status']}; RateLimit: {headers.get('RateLimit')}; "
              f"Retry-After: {headers.get('Retry-After', '-')}; body {body[:40]!r}")  # fmt: skip


async def asyncio_twin() -> None:
    limiter = AsyncTokenBucketLimiter(rate=1, capacity=2, client=rp.connect_async(), name="async")
    await limiter.reset("job")
    print("asyncio:", [bool(await limiter.hit("job")) for _ in range(3)])


def main() -> None:
    sliding_window()
    token_bucket()
    several_limits()
    decorator()
    guarded_endpoint()
    asyncio.run(asyncio_twin())


if __name__ == "__main__":
    main()
