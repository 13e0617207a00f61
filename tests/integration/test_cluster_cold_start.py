"""Concurrent first calls on a fresh asyncio cluster client, and a sync cluster pool that waits."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from redispatterns._core.ops import Command, Flow
from redispatterns._runner import run_async, run_sync
from redispatterns.client import _build
from redispatterns.testing.plugin import Backend


def _get(key: str) -> Flow[Any]:
    return (yield Command("GET", key))


def _cluster_url(backend: Backend) -> str:
    if not backend.is_cluster or backend.url is None:
        pytest.skip("cluster only")
    return backend.url


def test_fresh_async_cluster_client_takes_concurrent_first_calls(backend: Backend) -> None:
    url = _cluster_url(backend)

    async def once() -> list[BaseException]:
        c = _build(url, {}, asyncio_=True)
        try:
            res = await asyncio.gather(
                *(run_async(c, _get(f"k{i}")) for i in range(40)), return_exceptions=True
            )
        finally:
            await c.aclose()
        return [r for r in res if isinstance(r, BaseException)]

    errors = [e for _ in range(5) for e in asyncio.run(once())]
    assert errors == []


def test_sync_cluster_pool_waits_instead_of_failing(backend: Backend) -> None:
    url = _cluster_url(backend)
    c = _build(url, {"max_connections": 2}, asyncio_=False)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                run_sync(c, _get("same-key"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    assert errors == []


def test_stream_reads_take_one_round_trip_on_cluster(backend: Backend) -> None:
    """redis-py asks the server for XREADGROUP's keys (COMMAND GETKEYS); declared keys route it."""
    from loadtests.harness import count_round_trips

    url = _cluster_url(backend)
    c = _build(url, {}, asyncio_=False)
    c.xadd("{s}x", {"a": 1})
    c.xgroup_create("{s}x", "g", id="0")

    def read() -> Flow[Any]:
        return (
            yield Command(
                "XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "{s}x", ">", keys=("{s}x",)
            )
        )

    first = run_sync(c, read())
    with count_round_trips() as n:
        again = run_sync(c, read())
    c.close()
    assert first and first[0][1][0][1] == {b"a": b"1"}
    assert again == []
    assert n.n == 1
