"""Tour: pub/sub that counts what it missed and says so."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ORDER = 50
TITLE = "Pub/sub: numbered messages, reconnects and gap reports"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.pubsub import Gap, PubSubMessage, Subscriber, publish

    client = rp.connect(url)
    mount = rp.Mount(prefix="demo:")
    seen: list[PubSubMessage] = []
    gaps: list[Gap] = []

    def wait(cond: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill_connections(client: Any, sub: Subscriber) -> None:
        for link in sub._links:  # the subscriber's own connections, no one else's
            host, port = link.conn._sock.getsockname()[:2]
            client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")

    with Subscriber(["news"], mount=mount, client=client, handler=seen.append, on_gap=gaps.append,
                    backoff=(0.3, 2.0)) as sub:  # fmt: skip
        publish("news", {"headline": "hello"}, mount=mount, client=client)
        wait(lambda: len(seen) == 1)
        say(f"publish() numbers each message per channel in one script: got #{seen[0].seq} {seen[0].data}")
        kill_connections(client, sub)
        publish("news", {"headline": "published while the subscriber was away"}, mount=mount, client=client)
        wait(lambda: sub.stats.reconnects == 1 and sub.wait_ready(0))
        publish("news", {"headline": "back"}, mount=mount, client=client)
        wait(lambda: len(seen) == 2 and len(gaps) == 2)
        say("CLIENT KILL of the subscriber's connection: it resubscribed with backoff and reported:")
        for g in gaps:
            if g.reason == "sequence":
                say(f"  a sequence gap: message #{g.first_missing} on {g.channels[0]!r} never arrived")
            else:
                say(f"  a disconnect gap of {g.until - g.since:.2f}s ({g.error})")
        say(f"then #{seen[-1].seq} arrived; raw redis-py would have stayed silent about #2.")
    say("close() joined its threads and returned its connection.")
