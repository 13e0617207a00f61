"""Both runners, driven against stub clients: the op table, errors, retries, clocks, compute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from redispatterns import _runner
from redispatterns._core.ops import (
    Batch,
    Command,
    Compute,
    Flow,
    Now,
    Probe,
    Script,
    Sleep,
    WallClock,
)
from redispatterns._core.scripts import load
from redispatterns._core.server import ServerInfo
from redispatterns._runner import run_async, run_sync
from tests.core.stubs import AsyncStubClient, StubClient

Responder = Callable[[tuple[Any, ...]], Any]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Callable[[Responder, Flow[Any]], tuple[Any, StubClient]]:
    def go(respond: Responder, flow: Flow[Any]) -> tuple[Any, StubClient]:
        if request.param == "sync":
            c = StubClient(respond)
            return run_sync(c, flow), c
        ac = AsyncStubClient(respond)
        return asyncio.run(run_async(ac, flow)), ac

    return go


def test_command_reply_is_sent_back(drive: Any) -> None:
    def flow() -> Flow[Any]:
        a = yield Command("GET", "k")
        b = yield Command("GET", "k2")
        return a, b

    result, c = drive(lambda args: b"v:" + args[1].encode(), flow())
    assert result == (b"v:k", b"v:k2")
    assert c.calls == [("GET", "k"), ("GET", "k2")]


def test_errors_are_thrown_in_and_can_be_handled(drive: Any) -> None:
    def flow() -> Flow[str]:
        try:
            yield Command("LPUSH", "k", "x")
        except ResponseError as exc:
            return f"handled {exc}"
        return "no error"

    result, _ = drive(lambda args: ResponseError("WRONGTYPE"), flow())
    assert result == "handled WRONGTYPE"


def test_unhandled_error_propagates(drive: Any) -> None:
    def flow() -> Flow[None]:
        yield Command("LPUSH", "k", "x")

    with pytest.raises(ResponseError):
        drive(lambda args: ResponseError("boom"), flow())


def test_reads_are_retried_after_connection_errors(drive: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner, "_backoff", lambda attempt: 0.0)
    failures = {"n": 0}

    def respond(args: tuple[Any, ...]) -> Any:
        if failures["n"] < 2:
            failures["n"] += 1
            return RedisConnectionError("reset")
        return b"ok"

    def flow() -> Flow[Any]:
        return (yield Command("GET", "k"))

    result, c = drive(respond, flow())
    assert result == b"ok"
    assert len(c.calls) == 3


def test_reads_give_up_after_the_retry_budget(drive: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner, "_backoff", lambda attempt: 0.0)

    def flow() -> Flow[Any]:
        return (yield Command("GET", "k"))

    with pytest.raises(RedisConnectionError):
        drive(lambda args: RedisConnectionError("down"), flow())


def test_writes_are_never_retried(drive: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runner, "_backoff", lambda attempt: 0.0)
    seen: list[tuple[Any, ...]] = []

    def respond(args: tuple[Any, ...]) -> Any:
        seen.append(args)
        return RedisConnectionError("reply lost")

    def flow() -> Flow[Any]:
        return (yield Command("INCR", "k"))

    with pytest.raises(RedisConnectionError):
        drive(respond, flow())
    assert seen == [("INCR", "k")]


def test_scripts_load_on_noscript_then_run_by_sha(drive: Any) -> None:
    script = load("core_time")
    loaded: list[bool] = []

    def respond(args: tuple[Any, ...]) -> Any:
        if args[0] == "SCRIPT":
            loaded.append(True)
            return script.sha
        return 42 if loaded else NoScriptError("NOSCRIPT No matching script")

    def flow() -> Flow[Any]:
        a = yield Script(script, (), ("x",))
        b = yield Script(script)
        return a, b

    result, c = drive(respond, flow())
    assert result == (42, 42)
    assert c.registered == [script.source]
    # the sha and the key count go as the bytes redis-py would send for them
    assert c.calls == [
        ("EVALSHA", script.sha.encode(), b"0", "x"),
        ("SCRIPT", "LOAD", script.source),
        ("EVALSHA", script.sha.encode(), b"0", "x"),
        ("EVALSHA", script.sha.encode(), b"0"),
    ]


def test_batch_runs_one_pipeline(drive: Any) -> None:
    script = load("core_time")

    def flow() -> Flow[Any]:
        return (
            yield Batch((Command("INCR", "{a}1"), Script(script), Command("GET", "{a}2")), transaction=True)
        )

    result, c = drive(lambda args: args[0], flow())
    assert result == ["INCR", "EVAL", "GET"]
    assert len(c.pipelines) == 1
    assert c.pipelines[0].transaction is True
    assert c.pipelines[0].stack[1] == ("EVAL", script.source, 0)  # the source: no NOSCRIPT mid-batch


def test_batch_errors_as_values_when_asked(drive: Any) -> None:
    def flow() -> Flow[Any]:
        return (yield Batch((Command("GET", "a"), Command("GET", "b")), raise_on_error=False))

    def respond(args: tuple[Any, ...]) -> Any:
        return ResponseError("bad") if args[1] == "b" else b"1"

    result, _ = drive(respond, flow())
    assert result[0] == b"1"
    assert isinstance(result[1], ResponseError)


def test_clocks_sleep_and_compute(drive: Any) -> None:
    def double(x: int) -> int:
        return x * 2

    def flow() -> Flow[Any]:
        t0 = yield Now()
        t1 = yield Sleep(0.01)
        wall = yield WallClock()
        v = yield Compute(double, (21,))
        return t1 - t0, wall, v

    (elapsed, wall, v), _ = drive(lambda args: None, flow())
    assert elapsed >= 0.009
    assert wall > 1_600_000_000
    assert v == 42


def test_async_runner_awaits_async_compute() -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    def flow() -> Flow[Any]:
        return (yield Compute(fetch, (1,)))

    assert asyncio.run(run_async(AsyncStubClient(lambda a: None), flow())) == 2


def test_sync_runner_refuses_async_compute() -> None:
    async def fetch() -> int:
        return 1

    def flow() -> Flow[Any]:
        return (yield Compute(fetch))

    with pytest.raises(TypeError, match="async"):
        run_sync(StubClient(lambda a: None), flow())


def test_probe_reads_info_once_per_client(drive: Any) -> None:
    def flow() -> Flow[Any]:
        a = yield Probe()
        b = yield Probe()
        return a, b

    info_text = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.1"}
    (a, b), c = drive(lambda args: info_text, flow())
    assert isinstance(a, ServerInfo)
    assert a is b
    assert a.kind == "valkey"
    assert a.version == (8, 1, 1)
    assert [call for call in c.calls if call[0] == "INFO"] == [("INFO", "server")]


def test_cluster_info_reply_per_node_is_reduced() -> None:
    reply = {"127.0.0.1:7000": {"redis_version": "7.0.15"}, "127.0.0.1:7001": {"redis_version": "7.0.15"}}
    info = _runner._info_from(object(), reply)
    assert info.kind == "redis"
    assert info.version == (7, 0, 15)


def test_not_an_op_is_a_type_error(drive: Any) -> None:
    def flow() -> Flow[Any]:
        yield "GET k"  # type: ignore[misc]

    with pytest.raises(TypeError, match="not an operation"):
        drive(lambda args: None, flow())


def test_flow_is_closed_when_the_runner_leaves(drive: Any) -> None:
    closed: list[bool] = []

    def flow() -> Flow[Any]:
        try:
            yield Command("GET", "k")
        finally:
            closed.append(True)

    with pytest.raises(ResponseError):
        drive(lambda args: ResponseError("x"), flow())
    assert closed == [True]


def test_retryable_flags() -> None:
    assert Command("GET", "k").retryable
    assert Command(b"zrange", "k", 0, 1).retryable
    assert not Command("SET", "k", "v").retryable
    assert Command("SET", "k", "v", retryable=True).retryable
    assert Script(load("core_time")).retryable
    assert Batch((Command("GET", "a"), Command("GET", "b"))).retryable
    assert not Batch((Command("GET", "a"), Command("INCR", "b"))).retryable
    assert not Batch((Command("GET", "{a}"),), transaction=True).retryable


def test_async_single_flight_shares_one_result_and_one_error() -> None:
    """One computation per key at a time; followers get the leader's value, or its exception."""
    from redispatterns._core.ops import Coalesce, Compute

    async def main() -> None:
        flights = _runner.flights(asyncio_=True)
        gate = asyncio.Event()
        calls: list[str] = []

        async def work(tag: str) -> str:
            calls.append(tag)
            await gate.wait()
            if tag == "bad":
                raise ValueError("leader failed")
            return tag.upper()

        def flow_of(tag: str) -> Any:
            def make() -> Any:
                return (yield Compute(work, (tag,)))

            return (yield Coalesce(flights, tag, make))

        gate.set()
        assert await run_async(None, flow_of("solo")) == ("SOLO", True)  # alone: it leads
        gate.clear()
        ok = [asyncio.ensure_future(run_async(None, flow_of("ok"))) for _ in range(5)]
        bad = [asyncio.ensure_future(run_async(None, flow_of("bad"))) for _ in range(3)]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*ok)
        assert sorted(results, key=lambda r: r[1]) == [("OK", False)] * 4 + [("OK", True)]
        errors = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(e, ValueError) and str(e) == "leader failed" for e in errors), errors
        assert calls == ["solo", "ok", "bad"]  # one computation per key
        assert await run_async(None, flow_of("ok")) == ("OK", True)  # the flight ended with its leader

    asyncio.run(main())
