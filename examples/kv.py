"""The kv facade: named mounts with modes, schemas, quotas and TTLs, and a buffered write policy.

REDIS_URL=redis://localhost:6379/0 python examples/kv.py
"""

from __future__ import annotations

import os

import redispatterns as rp
from redispatterns.kv import KV

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

MOUNTS = {
    "user": rp.Mount("read-write", "example:user:", ttl=3600, max_entries=1000),
    "prefs": rp.Mount(
        "read-write",
        "example:prefs:",
        schema={
            "theme": {"type": "string", "default": "light"},
            "font_size": {"type": "number", "default": 12},
        },
    ),
    "config": rp.Mount("read", "example:config:"),
}


def main() -> None:
    kv = KV(URL, MOUNTS)  # write_policy="immediate", the default: every set() is on the server
    kv.set("user", "profile", {"name": "Ada", "langs": ["en"]})
    kv.merge("user", "profile", {"city": "London"})  # atomic, keeps the other fields
    print("profile:", kv.get("user", "profile"))
    print("theme (schema default):", kv.get("prefs", "theme"))
    kv.set("prefs", "theme", "dark")
    try:
        kv.set("prefs", "colour", "red")
    except rp.SchemaError as exc:
        print("refused:", exc)
    try:
        kv.set("config", "debug", True)
    except PermissionError as exc:
        print("refused:", exc)
    info = kv.info("user", "profile")
    assert info is not None
    print(f"info: {info.size} bytes, {info.content_type}, ttl {info.ttl:.0f}s")
    print("keys:", kv.keys("user"), "mounts:", [m["name"] for m in kv.mounts()])

    with KV(URL, MOUNTS, write_policy="dispose") as buffered:  # one pipeline when the block ends
        for i in range(10):
            buffered.set("user", f"visit:{i}", i)
        print(
            "buffered writes:", buffered.pending, "- visible to this object:", buffered.get("user", "visit:3")
        )
    print("after the block:", len(kv.keys("user")), "records")
    kv.clear("user")
    kv.clear("prefs")
    print("cleared; theme is back to", kv.get("prefs", "theme"))


if __name__ == "__main__":
    main()
