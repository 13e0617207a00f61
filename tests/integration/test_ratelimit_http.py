"""The decorator and the HTTP middlewares, driven through real WSGI (a wsgiref server on loopback)
and ASGI applications, on every backend."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from redispatterns import RateLimited
from redispatterns.http import ASGIRateLimitMiddleware, RequestInfo, WSGIRateLimitMiddleware
from redispatterns.ratelimit import (
    AsyncMultiLimiter,
    AsyncSlidingWindowLimiter,
    AsyncTokenBucketLimiter,
    MultiLimiter,
    Policy,
    SlidingWindowLimiter,
    rate_limited,
)

# --------------------------------------------------------------------------- decorator


def test_rate_limited_sync(client: Any) -> None:
    lim = SlidingWindowLimiter(2, 60, client=client)
    calls: list[str] = []

    @rate_limited(lim, key=lambda user, **_: f"user:{user}")
    def handler(user: str, *, item: int = 0) -> str:
        """Docstring kept."""
        calls.append(user)
        return f"{user}:{item}"

    assert handler("a", item=1) == "a:1" and handler("a") == "a:0"
    with pytest.raises(RateLimited) as info:
        handler("a")
    assert handler("b") == "b:0"
    assert calls == ["a", "a", "b"]  # the denied call never ran
    assert info.value.key == "user:a" and 59 < (info.value.retry_after or 0) <= 60
    assert handler.__doc__ == "Docstring kept." and handler.__name__ == "handler"


async def test_rate_limited_async(aclient: Any) -> None:
    lim = AsyncTokenBucketLimiter(1, 2, per=60, client=aclient)

    @rate_limited(lim)  # one subject for the whole function
    async def job(x: int) -> int:
        return x * 2

    assert await job(1) == 2 and await job(2) == 4
    with pytest.raises(RateLimited):
        await job(3)
    assert await lim.reset(f"fn:{job.__module__}.{job.__qualname__}")
    assert await job(4) == 8


def test_rate_limited_checks_flavours(client: Any) -> None:
    lim = SlidingWindowLimiter(2, 60, client=client)
    with pytest.raises(TypeError, match="async"):

        @rate_limited(lim)
        async def coro() -> None: ...

    alim = AsyncSlidingWindowLimiter(2, 60)
    with pytest.raises(TypeError, match="sync"):

        @rate_limited(alim)  # type: ignore[arg-type]
        def plain() -> None: ...

    with pytest.raises(TypeError):
        rate_limited(42)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="second, minute, hour, day"):
        rate_limited("not a limiter")  # a bad rate string fails at decoration

    @rate_limited(lim, key=lambda: 42)  # type: ignore[arg-type,return-value]
    def bad_key() -> None: ...

    with pytest.raises(TypeError, match="key function"):
        bad_key()

    @rate_limited(lim, key="fixed-subject", cost=2)
    def heavy() -> str:
        return "ok"

    assert heavy() == "ok"
    with pytest.raises(RateLimited):
        heavy()


# --------------------------------------------------------------------------- WSGI


def hello_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ.get("PATH_INFO", "/").encode()]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    servers: list[WSGIServer] = []

    def start(app: Any) -> str:
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_wsgi_middleware_guards_an_endpoint(client: Any, serve: Callable[[Any], str]) -> None:
    lim = MultiLimiter(
        [Policy.sliding(2, 60, name="minute"), Policy.fixed(100, 86400, name="day")], client=client
    )
    url = serve(WSGIRateLimitMiddleware(hello_wsgi, lim))
    status, headers, body = get(url + "/a")
    assert (status, body) == (200, b"hello /a")
    assert headers["RateLimit-Policy"] == '"minute";q=2;w=60, "day";q=100;w=86400'
    assert headers["RateLimit"].startswith('"minute";r=1;t=60, "day";r=99;t=')
    assert get(url + "/a", {"X-Forwarded-For": "1.2.3.4"})[0] == 200  # spoofing does not help
    status, headers, body = get(url + "/a", {"X-Forwarded-For": "5.6.7.8"})
    assert status == 429 and 59 <= int(headers["Retry-After"]) <= 60
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["violated-policies"] == ["minute"] and problem["status"] == 429
    assert lim.peek("ip:127.0.0.1").policies[1].remaining == 98  # the denial charged nothing


def test_wsgi_middleware_trusted_proxy_and_custom_key(client: Any, serve: Callable[[Any], str]) -> None:
    lim = SlidingWindowLimiter(1, 60, client=client)
    url = serve(WSGIRateLimitMiddleware(hello_wsgi, lim, trusted_proxies=["127.0.0.0/8"]))
    assert get(url, {"X-Forwarded-For": "1.2.3.4"})[0] == 200
    assert get(url, {"X-Forwarded-For": "1.2.3.4"})[0] == 429
    assert get(url, {"X-Forwarded-For": "5.6.7.8"})[0] == 200  # another client behind the proxy

    def by_token(req: RequestInfo) -> str | None:
        if req.path == "/health":
            return None  # exempt
        return "token:" + req.headers.get("authorization", "anonymous")

    lim2 = SlidingWindowLimiter(1, 60, client=client, name="tokens")
    url2 = serve(WSGIRateLimitMiddleware(hello_wsgi, lim2, key=by_token, headers=False))
    status, headers, _ = get(url2 + "/x", {"Authorization": "t1"})
    assert status == 200 and "RateLimit" not in headers
    assert get(url2 + "/x", {"Authorization": "t1"})[0] == 429
    assert get(url2 + "/x", {"Authorization": "t2"})[0] == 200
    assert [get(url2 + "/health")[0] for _ in range(3)] == [200, 200, 200]


def test_middlewares_check_their_limiter(client: Any) -> None:
    with pytest.raises(TypeError, match="asyncio"):
        ASGIRateLimitMiddleware(hello_wsgi, SlidingWindowLimiter(1, 1, client=client))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sync"):
        WSGIRateLimitMiddleware(hello_wsgi, AsyncSlidingWindowLimiter(1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        WSGIRateLimitMiddleware(
            hello_wsgi, SlidingWindowLimiter(1, 1, client=client), trusted_proxies="10.0.0.1"
        )
    with pytest.raises(TypeError):
        WSGIRateLimitMiddleware(None, SlidingWindowLimiter(1, 1, client=client))
    with pytest.raises(TypeError):
        WSGIRateLimitMiddleware(hello_wsgi, SlidingWindowLimiter(1, 1, client=client), key="ip")


# --------------------------------------------------------------------------- ASGI


async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def call_asgi(
    app: Any, path: str = "/", client: str = "198.51.100.7", headers: Any = ()
) -> dict[str, Any]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": (client, 5000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return {
        "status": start["status"],
        "headers": {k.decode(): v.decode() for k, v in start["headers"]},
        "body": b"".join(m.get("body", b"") for m in sent[1:]),
    }


async def test_asgi_middleware_guards_an_endpoint(aclient: Any) -> None:
    lim = AsyncSlidingWindowLimiter(2, 60, client=aclient)
    app = ASGIRateLimitMiddleware(hello_asgi, lim)
    first = await call_asgi(app)
    assert first["status"] == 200 and first["body"] == b"hello"
    assert first["headers"]["ratelimit"] == '"2-per-60s";r=1;t=60'
    assert first["headers"]["content-type"] == "text/plain"
    assert (await call_asgi(app, headers=[("x-forwarded-for", "9.9.9.9")]))["status"] == 200
    denied = await call_asgi(app)
    assert denied["status"] == 429 and denied["headers"]["retry-after"] in ("59", "60")
    assert json.loads(denied["body"])["violated-policies"] == ["2-per-60s"]
    assert (await call_asgi(app, client="198.51.100.8"))["status"] == 200  # another client


async def test_asgi_middleware_trusts_only_configured_proxies(aclient: Any) -> None:
    lim = AsyncSlidingWindowLimiter(1, 60, client=aclient)
    app = ASGIRateLimitMiddleware(hello_asgi, lim, trusted_proxies=["10.0.0.0/8"])
    behind = [("x-forwarded-for", "203.0.113.5, 10.1.1.1")]
    assert (await call_asgi(app, client="10.0.0.1", headers=behind))["status"] == 200
    assert (await call_asgi(app, client="10.0.0.1", headers=behind))["status"] == 429
    assert (await lim.peek("ip:203.0.113.5")).remaining == 0
    exempt = ASGIRateLimitMiddleware(hello_asgi, lim, key=lambda req: None)
    assert [(await call_asgi(exempt))["status"] for _ in range(3)] == [200, 200, 200]
    await app({"type": "lifespan"}, None, None)  # non-HTTP scopes pass straight through


async def test_middlewares_take_a_rate_string(aclient: Any, client: Any) -> None:
    import redispatterns as rp

    rp.configure(client=client, async_client=aclient)
    try:
        app = ASGIRateLimitMiddleware(hello_asgi, "2/minute;100/day")
        assert isinstance(app.limiter, AsyncMultiLimiter) and app.limiter.name == "http"
        await app.limiter.reset("ip:198.51.100.9")
        got = [(await call_asgi(app, client="198.51.100.9"))["status"] for _ in range(3)]
        assert got == [200, 200, 429]
        wsgi = WSGIRateLimitMiddleware(hello_wsgi, "1/second")
        assert isinstance(wsgi.limiter, MultiLimiter) and [p.name for p in wsgi.limiter.policies] == [
            "1-per-1s"
        ]
        with pytest.raises(ValueError, match="second, minute, hour, day"):
            WSGIRateLimitMiddleware(hello_wsgi, "1/sec")
    finally:
        rp.configure()
