"""HTTP glue for rate limiters, with no framework dependency: ASGI and WSGI middlewares.

Admitted responses carry ``RateLimit-Policy`` and ``RateLimit`` (IETF draft); a denial answers
``429 Too Many Requests`` with ``Retry-After`` and a ``quota-exceeded`` problem body naming the
violated policies. The subject defaults to the client's address; ``X-Forwarded-For`` is read
only when the peer is one of ``trusted_proxies``, walking from the right past trusted hops.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.ratelimit import Decision
from ..ratelimit import AsyncMultiLimiter, MultiLimiter

__all__ = ["ASGIRateLimitMiddleware", "RequestInfo", "WSGIRateLimitMiddleware", "client_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROBLEM_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def _networks(trusted: Iterable[str]) -> tuple[Network, ...]:
    if isinstance(trusted, str):
        raise TypeError("trusted_proxies must be a list of addresses or networks, not one string")
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _is_trusted(addr: str, nets: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network] = ()
) -> str:
    """The client's address: the peer, or — only when the peer is a trusted proxy — the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy."""
    addr = peer or "unknown"
    if not trusted_proxies or not forwarded_for or not _is_trusted(addr, trusted_proxies):
        return addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return addr  # garbage from a client: fall back to the last trusted hop
        addr = hop
    return addr


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a key function sees of a request, the same for ASGI and WSGI."""

    method: str
    path: str
    client: str
    headers: Mapping[str, str]


KeyFn = Callable[[RequestInfo], "str | None"]


def _default_key(req: RequestInfo) -> str:
    return f"ip:{req.client}"


def _problem(d: Decision) -> bytes:
    body = {
        "type": PROBLEM_TYPE,
        "title": "Too Many Requests",
        "status": 429,
        "violated-policies": list(d.violated),
    }
    if d.retry_after is not None:
        body["retry-after"] = max(1, -(-(d.retry_after_us or 0) // 1_000_000))
    return json.dumps(body).encode()


class _Common:
    def __init__(
        self,
        app: Any,
        limiter: Any,
        *,
        key: KeyFn | None = None,
        cost: int = 1,
        trusted_proxies: Iterable[str] = (),
        headers: bool = True,
    ) -> None:
        if not callable(app):
            raise TypeError("app must be an ASGI/WSGI application")
        if key is not None and not callable(key):
            raise TypeError("key must be a function of RequestInfo returning a str (or None to skip)")
        self.app = app
        self.limiter = limiter
        self.key: KeyFn = key or _default_key
        self.cost = cost
        self.trusted = _networks(trusted_proxies)
        self.send_headers = headers


class ASGIRateLimitMiddleware(_Common):
    """ASGI middleware over an ``Async*Limiter``: ``app = ASGIRateLimitMiddleware(app, limiter)``,
    or over a rate string (``"100/minute"``, ``"10/second;1000/hour"``: exact sliding logs on the
    default asyncio client)."""

    def __init__(self, app: Any, limiter: AsyncMultiLimiter | str, **options: Any) -> None:
        if isinstance(limiter, str):
            limiter = AsyncMultiLimiter(limiter, name="http")
        if not isinstance(limiter, AsyncMultiLimiter):
            raise TypeError("the ASGI middleware needs an asyncio limiter (e.g. AsyncSlidingWindowLimiter)")
        super().__init__(app, limiter, **options)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        peer = scope.get("client")
        ip = client_address(peer[0] if peer else None, headers.get("x-forwarded-for"), self.trusted)
        req = RequestInfo(scope.get("method", "GET"), scope.get("path", "/"), ip, headers)
        subject = self.key(req)
        if subject is None:
            await self.app(scope, receive, send)
            return
        d: Decision = await self.limiter.hit(subject, self.cost)
        extra = (
            [(k.lower().encode(), v.encode()) for k, v in d.headers().items()] if self.send_headers else []
        )
        if not d.allowed:
            body = _problem(d)
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and extra:
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class WSGIRateLimitMiddleware(_Common):
    """WSGI middleware over a sync limiter: ``app = WSGIRateLimitMiddleware(app, limiter)``, or
    over a rate string (``"100/minute"``: exact sliding logs on the default client)."""

    def __init__(self, app: Any, limiter: MultiLimiter | str, **options: Any) -> None:
        if isinstance(limiter, str):
            limiter = MultiLimiter(limiter, name="http")
        if not isinstance(limiter, MultiLimiter):
            raise TypeError("the WSGI middleware needs a sync limiter (e.g. SlidingWindowLimiter)")
        super().__init__(app, limiter, **options)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")
        }
        ip = client_address(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.trusted)
        req = RequestInfo(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"), ip, headers)
        subject = self.key(req)
        if subject is None:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        d: Decision = self.limiter.hit(subject, self.cost)
        extra = list(d.headers().items()) if self.send_headers else []
        if not d.allowed:
            body = _problem(d)
            start_response(
                "429 Too Many Requests",
                [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body))), *extra],
            )
            return [body]

        def start_with_headers(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            return start_response(status, [*response_headers, *extra], exc_info)

        result = self.app(environ, start_with_headers)
        return result
