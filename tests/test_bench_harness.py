"""The bench harness reports a failing case or module and still measures and writes the rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import redis

from loadtests.compare import compare
from loadtests.harness import BenchCase, main, pin


def _module(name: str, url_cases: object) -> types.ModuleType:
    mod = types.ModuleType(f"loadtests.{name}")
    mod.cases = url_cases  # type: ignore[attr-defined]
    return mod


def test_failures_are_reported_and_the_rest_still_run(
    standalone_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", standalone_url)

    def good_cases(url: str) -> list[BenchCase]:
        c = redis.Redis.from_url(url)

        def broken() -> None:
            raise RuntimeError("this case is broken")

        return [
            BenchCase("demo", "broken case", broken, c.ping),
            BenchCase("demo", "PING", c.ping, c.ping),
        ]

    def bad_module(url: str) -> list[BenchCase]:
        raise RuntimeError("BUSYGROUP Consumer Group name already exists")

    out = tmp_path / "run.json"
    rc = main([_module("bench_bad", bad_module), _module("bench_good", good_cases)],
              ["--calls", "100", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 1
    assert "FAILED bench_bad (setting up its cases)" in printed and "FAILED demo/broken case" in printed
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["results"]] == ["PING"]
    assert (
        data["results"][0]["round_trips"] == 1.0 and data["results"][0]["ratio"] > 0
    )  # no timing claims here
    assert {f["case"] for f in data["failures"]} == {"bench_bad (setting up its cases)", "demo/broken case"}
    assert data["server"]["version"] and data["versions"]["redis"]

    # the comparison reads two such runs ratio by ratio
    head = json.loads(out.read_text())
    head["results"][0]["ratio"] = data["results"][0]["ratio"] * 1.1
    (tmp_path / "head.json").write_text(json.dumps(head))
    table = compare(str(out), str(tmp_path / "head.json"))
    assert "demo: PING (sync)" in table and "+10.0%" in table


def test_profile_charges_time_to_layers_and_reads_server_cpu(
    standalone_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadtests.profile import layer_of

    assert layer_of("/x/redispatterns/_core/validate.py", "seconds") == "validation"
    assert layer_of("/x/redispatterns/_core/lock.py", "acquire") == "flow"
    assert layer_of("/x/redispatterns/_runner.py", "run_sync") == "runner"
    assert layer_of("/x/redispatterns/lock.py", "acquire") == "shell"
    assert layer_of("/x/site-packages/redis/_parsers/hiredis.py", "read_response") == "parser"
    assert layer_of("/x/site-packages/redis/client.py", "execute_command") == "redis-py"
    assert layer_of("~", "<method 'sendall' of '_socket.socket' objects>") == "socket"
    monkeypatch.setenv("REDIS_URL", standalone_url)

    def cases(url: str) -> list[BenchCase]:
        import redispatterns as rp

        c = rp.connect(url)
        raw = redis.Redis.from_url(url)
        lock = rp.Lock("bench:profile", ttl=5, client=c)
        return [BenchCase("demo", "lock", lambda: lock.acquire().release(), lambda: raw.set("k", 1))]

    out = tmp_path / "run.json"
    assert main([_module("bench_p", cases)], ["--calls", "100", "--profile", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "call  µs/call:" in printed and "floor µs/call:" in printed
    row = json.loads(out.read_text())["results"][0]
    call, floor = row["profile"], row["floor_profile"]
    assert {"flow", "runner", "shell", "redis-py"} <= set(call) and "flow" not in floor
    assert call["server"] > 0 and floor["server"] > 0  # INFO commandstats moved


def test_cases_measured_at_several_sizes_make_a_growth_series(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from loadtests.chart import draw_growth, growth_series

    rows = [
        {"pattern": "leaderboard", "case": "top N=10 with data", "flavour": "sync", "ratio": 0.7},
        {"pattern": "leaderboard", "case": "top N=1_000 with data", "flavour": "sync", "ratio": 1.1},
        {"pattern": "kv", "case": "get_all N=10", "flavour": "async", "ratio": 1.2},  # one size: no line
        {"pattern": "kv", "case": "set", "flavour": "sync", "ratio": 1.1},
    ]
    assert growth_series({"results": rows}) == {
        "leaderboard: top N with data (sync)": [(10, 0.7), (1000, 1.1)]
    }
    assert draw_growth({"results": rows}, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert not draw_growth({"results": rows[2:]}, str(tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pin_puts_the_client_and_the_server_on_cpus_of_their_own() -> None:
    mine = os.sched_getaffinity(0)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        where = pin(server.pid)
        cpus = sorted(mine)
        if len(cpus) < 2:
            assert where == "not pinned"
        else:
            assert os.sched_getaffinity(0) == {cpus[0]}
            assert os.sched_getaffinity(server.pid) == {cpus[-1]}
            assert where == f"client on CPU {cpus[0]}, server on CPU {cpus[-1]}"
        assert pin(None) == "not pinned"  # $REDIS_URL: a server we did not start is left alone
    finally:
        os.sched_setaffinity(0, mine)  # the rest of this test process runs where it did
        server.kill()
        server.wait()


@pytest.mark.skipif(
    not (shutil.which("valgrind") and shutil.which("callgrind_control")), reason="needs valgrind (callgrind)"
)
def test_bench_lua_counts_each_script_and_the_limiters_commands_alone() -> None:
    from loadtests.lua_cost import counts

    # few subjects and calls: a server under callgrind takes a whole CPU while it runs, which
    # tests running beside this one (timeouts measured against a hung server) must not feel
    got = {label.strip(): n for label, n in counts(calls=20, subjects=20)}
    floor = got.pop("trivial EVALSHA (the floor)")
    assert len(got) == 13, got
    # every case does more than an empty script (a case of two scripts, more than two)
    assert all(n > floor * 2 for n in got.values()), got
    # and a limiter at least what its commands alone cost
    bare = {k: v for k, v in got.items() if "commands alone" in k}
    assert len(bare) == 2, got
    assert (
        got["SlidingWindowLimiter.hit (100/60s)"]
        >= bare["its commands alone (TIME ZCARD ZREMRANGEBYSCORE ZADD)"] * 0.98
    )
    assert (
        got["MultiLimiter.hit (10/s + 1000/h)"] > bare["its commands alone (TIME ZCOUNT INCRBY ZADD PEXPIRE)"]
    )
