"""Pub/sub that reports what it missed: numbered messages, a lost connection, a gap event.

REDIS_URL=redis://localhost:6379/0 python examples/pubsub.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redispatterns as rp
from redispatterns.pubsub import Gap, PubSubMessage, Subscriber, publish


def main() -> None:
    client = rp.connect()  # $REDIS_URL
    mount = rp.Mount(prefix="example:")
    seen: list[PubSubMessage] = []

    def on_gap(gap: Gap) -> None:
        if gap.reason == "sequence":
            print(
                f"  gap on {gap.channels[0]}: messages {gap.first_missing}..{gap.last_missing} never arrived"
            )
        else:
            print(f"  gap ({gap.reason}): {gap.until - gap.since:.2f}s without a connection ({gap.error})")

    with Subscriber(["orders"], patterns=["audit.*"], mount=mount, client=client, handler=seen.append,
                    on_gap=on_gap, backoff=(0.3, 2.0)) as sub:  # fmt: skip
        publish("orders", {"id": 1, "total": 9.5}, mount=mount, client=client)
        publish("audit.login", {"user": "ada"}, mount=mount, client=client)
        _wait(lambda: len(seen) == 2)
        for m in seen:
            print(f"got #{m.seq} on {m.channel!r} (pattern {m.pattern!r}): {m.data}")

        print("killing the subscriber's connection (CLIENT KILL ADDR ...) ...")
        kill_connections(client, sub)
        publish("orders", {"id": 2}, mount=mount, client=client)  # nobody is listening now
        _wait(lambda: sub.stats.reconnects == 1 and sub.wait_ready(0))
        publish("orders", {"id": 3}, mount=mount, client=client)
        _wait(lambda: len(seen) == 3)
        print(f"after the reconnect: #{seen[-1].seq} {seen[-1].data}")
        print(f"stats: {sub.stats}")
    print("closed: no thread, no connection left behind")


def kill_connections(client: Any, sub: Subscriber) -> None:
    """Simulate a network failure: CLIENT KILL the subscriber's own connections (and no other)."""
    for link in sub._links:  # peeking inside, for the demonstration only
        host, port = link.conn._sock.getsockname()[:2]
        client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting")
        time.sleep(0.01)


if __name__ == "__main__":
    main()
