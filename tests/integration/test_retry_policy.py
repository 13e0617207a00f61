"""Reads are retried after a lost reply; writes are not (a real server, real timeouts)."""

from __future__ import annotations

import time

import pytest
import redis

from redispatterns import ServerUnavailable
from redispatterns._core.ops import Command, Flow
from redispatterns._runner import run_sync
from redispatterns.client import _build
from redispatterns.testing.plugin import Backend


def _one(cmd: Command) -> Flow[object]:
    return (yield cmd)


@pytest.fixture
def fast_timeout_client(backend: Backend) -> redis.Redis:
    if backend.is_fake or backend.is_cluster:
        pytest.skip("needs one real standalone server to pause")
    assert backend.url
    c: redis.Redis = _build(backend.url, {"socket_timeout": 0.2}, asyncio_=False)
    return c


def test_write_whose_reply_is_lost_is_not_sent_again(
    backend: Backend, fast_timeout_client: redis.Redis
) -> None:
    admin = backend.sync_client()
    fast_timeout_client.ping()
    # the same 300 ms stall that the read below survives by retrying: a write is sent once,
    # its timeout surfaces to the caller, and nothing is repeated behind its back
    admin.execute_command("CLIENT", "PAUSE", 300, "WRITE")
    with pytest.raises(redis.TimeoutError) as caught:
        run_sync(fast_timeout_client, _one(Command("INCR", "counter")))
    # the outage leaves as ServerUnavailable, still the redis-py TimeoutError it was (issue 15.4)
    assert isinstance(caught.value, ServerUnavailable)
    assert isinstance(caught.value.__cause__, redis.TimeoutError)
    assert admin.get("counter") is None


def test_read_after_a_dropped_connection_is_retried(
    backend: Backend, fast_timeout_client: redis.Redis
) -> None:
    admin = backend.sync_client()
    admin.set("k", "v")
    fast_timeout_client.ping()
    admin.client_kill_filter(_type="normal", skipme=True)  # the pooled connection is now dead
    assert run_sync(fast_timeout_client, _one(Command("GET", "k"))) == b"v"


@pytest.mark.usefixtures("no_gc_pauses")
def test_a_read_that_times_out_costs_one_timeout(backend: Backend, fast_timeout_client: redis.Redis) -> None:
    """A timeout means the server may be hung: retrying it would multiply the wait (D2)."""
    admin = backend.sync_client()
    admin.set("k", "v")
    fast_timeout_client.ping()
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    started = time.monotonic()
    with pytest.raises(ServerUnavailable):
        run_sync(fast_timeout_client, _one(Command("GET", "k")))
    took = time.monotonic() - started
    assert took < 0.5, f"one 0.2 s timeout took {took:.2f} s: the read was retried"
