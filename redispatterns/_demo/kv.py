"""Tour: the kv facade, its mounts, quotas kept by one script, and the buffered write policy."""

from __future__ import annotations

from collections.abc import Callable

ORDER = 80
TITLE = "KV mounts: modes, schemas, atomic quotas, buffered writes"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.kv import KV

    mounts = {
        "user": rp.Mount("read-write", "demo:kv:user:", ttl=600, max_entries=3),
        "prefs": rp.Mount(
            "read-write", "demo:kv:prefs:", schema={"theme": {"type": "string", "default": "light"}}
        ),
        "config": rp.Mount("read", "demo:kv:config:"),
    }
    kv = KV(url, mounts, write_policy="immediate")
    kv.clear("user")
    say(
        "KV(url, mounts={...}) gives 11 functions over named mounts: "
        + ", ".join(m["name"] for m in kv.mounts())
    )
    kv.set("user", "profile", {"name": "Ada"})
    kv.merge("user", "profile", {"city": "London"})
    say(f"  set + merge (compare-and-set in Lua, TTL in the same command): {kv.get('user', 'profile')}")
    say(f"  a schema mount answers its default before any write: theme={kv.get('prefs', 'theme')!r}")
    try:
        kv.set("config", "debug", True)
    except PermissionError as exc:
        say(f"  a read mount refuses writes: {exc}")
    kv.set("user", "a", 1)
    kv.set("user", "b", 2)
    try:
        kv.set("user", "c", 3)
    except rp.QuotaExceeded as exc:
        say(f"  max_entries=3 is tracked by the write script, never scanned: {exc}")
    info = kv.info("user", "profile")
    if info is not None:
        say(f"  info(): {info.size} bytes, {info.content_type}, expires in {info.ttl:.0f}s")
    with KV(url, mounts, write_policy="dispose") as buffered:
        buffered.set("prefs", "theme", "dark")
        say(f"  write_policy='dispose' buffers ({buffered.pending} pending) and flushes when the block ends")
    say(f"  after the flush, theme={kv.get('prefs', 'theme')!r}; keys(user)={kv.keys('user')}")
    kv.clear("user")
    kv.clear("prefs")
