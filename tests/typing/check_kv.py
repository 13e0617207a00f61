"""User code around KV mounts that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import redispatterns as rp


def use(kv: rp.KV) -> None:
    assert_type(kv.get("user", "name"), Any)
    assert_type(kv.set("user", "name", "Ada", ttl=60), bool)
    assert_type(kv.merge("user", "doc", {"a": 1}), bool)
    assert_type(kv.delete("user", "name"), bool)
    assert_type(kv.has("user", "name"), bool)
    assert_type(kv.keys("user", start_after="a", limit=10), list[str])
    assert_type(kv.get_all("user"), dict[str, Any])
    assert_type(kv.clear("user"), bool)
    info = kv.info("user", "name")
    assert_type(info, rp.KVInfo | None)
    if info is not None:
        assert_type(info.size, int)
        assert_type(info.ttl, float | None)
    assert_type(kv.flush(), int)
    assert_type(kv.pending, int)
    assert_type(kv.write_policy, rp.kv.WritePolicy)
    assert_type(kv.mount("user"), rp.Namespace)
    assert_type(kv.mounts(), list[dict[str, str]])
    with rp.KV(None, {"user": rp.Mount(prefix="app:")}, write_policy="dispose") as buffered:
        assert_type(buffered, rp.KV)


async def use_async(kv: rp.AsyncKV) -> None:
    assert_type(await kv.get_all("user"), dict[str, Any])
    assert_type(await kv.info("user", "name"), rp.KVInfo | None)
    assert_type(await kv.set("user", "name", "Ada"), bool)
    async with kv as same:
        assert_type(same, rp.AsyncKV)
