"""Connecting: one pooled client per URL, server capabilities, and a namespace.

REDIS_URL=redis://localhost:6379/0 python examples/connect.py
"""

from __future__ import annotations

import redispatterns as rp


def main() -> None:
    client = rp.connect()  # $REDIS_URL, with pinned timeouts and retry policy
    info = rp.server_info(client)
    print(f"connected to {info}")
    print("sharded pub/sub:", info.has("sharded_pubsub"))
    mount = rp.Mount(prefix="example:", ttl=60)
    print("a lock's keys:", mount.keyspace.tagged("lock", "invoice:7"), "and its fence counter")


if __name__ == "__main__":
    main()
