"""Tour: connecting, what the server is, namespaces, and the server clock."""

from __future__ import annotations

from collections.abc import Callable

ORDER = 0
TITLE = "Connection, namespaces and the server clock"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns._core.clock import server_time_us
    from redispatterns._runner import run_sync

    client = rp.connect(url)
    info = rp.server_info(client)
    say(f"rp.connect() gives one pooled client per URL; the server is {info}.")
    say(f"  capabilities: {', '.join(sorted(info.capabilities)) or 'none detected'}")
    mount = rp.Mount(prefix="demo:", ttl=60)
    ks = mount.keyspace
    say(f"a Mount is a namespace: prefix {mount.prefix!r}, default TTL {mount.ttl}s, mode {mount.mode}")
    say(f"  keys of one subject share a hash tag: {ks.tagged('lock', 'invoice:7', 'fence')}")
    say(f"  SCAN patterns are glob-escaped: {ks.match('weird*[key]')}")
    us = run_sync(client, server_time_us())
    say(f"Lua from lua/core_time.lua says the server clock reads {us} µs since the epoch.")
