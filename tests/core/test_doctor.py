"""The doctor's checks without a server: facts in, findings and exit codes out."""

from __future__ import annotations

from typing import Any

import pytest

from redispatterns._core import doctor as core
from redispatterns._core.doctor import FAIL, INFO, OK, WARN, ClusterFacts, Finding, NodeFacts
from redispatterns._core.ops import Batch
from redispatterns.testing.replay import replay

GiB = 2**30
NO_SAVE = {"save": "", "appendfsync": "everysec", "latency-monitor-threshold": "100"}


def node(config: dict[str, str] | None = None, **info: Any) -> NodeFacts:
    base = {"role": "master", "maxmemory": str(GiB), "maxmemory_policy": "noeviction",
            "used_memory": str(GiB // 10), "aof_enabled": "1"}  # fmt: skip
    base.update({k: str(v) for k, v in info.items()})
    return NodeFacts("n1:6379", base, dict(NO_SAVE) if config is None else config)


def by(findings: list[Finding], check: str) -> list[tuple[str, str]]:
    return [(f.verdict, f.message) for f in findings if f.check == check]


def verdicts(findings: list[Finding], check: str) -> list[str]:
    return [v for v, _ in by(findings, check)]


def test_eviction_policy_against_each_pattern() -> None:
    lru = node(maxmemory_policy="allkeys-lru")
    assert verdicts(core.diagnose([lru], ("lock",)), "eviction") == [FAIL]
    assert verdicts(core.diagnose([lru], ("stream",)), "eviction") == [FAIL]
    assert verdicts(core.diagnose([lru], ("ratelimit", "session")), "eviction") == [WARN]
    assert verdicts(core.diagnose([lru], ("cache", "pubsub")), "eviction") == [OK]
    msg = by(core.diagnose([lru], ("lock", "stream")), "eviction")[0][1]
    assert "allkeys-lru evicts any key" in msg and "second holder" in msg and "messages lost" in msg
    vol = node(maxmemory_policy="volatile-ttl")
    assert verdicts(core.diagnose([vol], ("lock",)), "eviction") == [FAIL]  # locks carry a TTL
    assert verdicts(core.diagnose([vol], ("stream", "store", "kv")), "eviction") == [OK]
    inert = node(maxmemory_policy="allkeys-lfu", maxmemory=0)
    assert verdicts(core.diagnose([inert], ("lock",)), "eviction") == [WARN]
    assert "inert while maxmemory is 0" in by(core.diagnose([inert], ("lock",)), "eviction")[0][1]
    noev = node()
    assert verdicts(core.diagnose([noev], ("cache", "lock")), "eviction") == [WARN]  # OOM for all
    assert verdicts(core.diagnose([noev], ("cache",)), "eviction") == [OK]
    assert verdicts(core.diagnose([noev], ("lock",)), "eviction") == [OK]
    assert verdicts(core.diagnose([node(maxmemory_policy="")], ("lock",)), "eviction") == [INFO]
    from_config = NodeFacts("n", {"maxmemory": "1", "used_memory": "0"}, {"maxmemory-policy": "allkeys-lru"})
    assert verdicts(core.diagnose([from_config], ("lock",)), "eviction") == [FAIL]


def test_persistence_for_fences_streams_and_stores() -> None:
    none = node(aof_enabled=0)
    f = core.diagnose([none], ("lock", "session"))
    assert verdicts(f, "persistence") == [FAIL] and "fencing tokens" in by(f, "persistence")[0][1]
    assert verdicts(core.diagnose([none], ("session",)), "persistence") == [WARN]
    assert verdicts(core.diagnose([none], ("cache", "ratelimit", "pubsub")), "persistence") == []
    rdb = node({"save": "3600 1", "appendfsync": "everysec"}, aof_enabled=0)
    assert verdicts(core.diagnose([rdb], ("stream",)), "persistence") == [WARN]
    assert verdicts(core.diagnose([node()], ("stream",)), "persistence") == [OK]
    lazy = node({"save": "", "appendfsync": "no"})
    assert verdicts(core.diagnose([lazy], ("store",)), "persistence") == [WARN]
    managed = node(None, aof_enabled=0)
    managed = NodeFacts(managed.address, managed.info, None)  # CONFIG refused
    assert verdicts(core.diagnose([managed], ("kv",)), "persistence") == [INFO]
    broken = node(rdb_last_bgsave_status="err")
    assert verdicts(core.diagnose([broken], ("cache",)), "persistence") == [FAIL]
    assert verdicts(core.diagnose([node(aof_last_write_status="err")], ()), "persistence") == [FAIL]


def test_memory_headroom() -> None:
    assert verdicts(core.diagnose([node()], ("cache",)), "memory") == [OK]
    full = node(used_memory=int(GiB * 0.96))
    assert verdicts(core.diagnose([full], ("cache",)), "memory") == [FAIL]
    evicting = node(used_memory=int(GiB * 0.96), maxmemory_policy="allkeys-lru")
    assert verdicts(core.diagnose([evicting], ("cache",)), "memory") == [WARN]
    assert verdicts(core.diagnose([node(used_memory=int(GiB * 0.85))], ("cache",)), "memory") == [WARN]
    unlimited = node(maxmemory=0, total_system_memory=8 * GiB)
    (v, msg), = by(core.diagnose([unlimited], ("cache",)), "memory")  # fmt: skip
    assert v == WARN and "no maxmemory" in msg and "8.0 GiB" in msg
    assert "of the machine" not in by(core.diagnose([node(maxmemory=0)], ()), "memory")[0][1]
    evicted = node(evicted_keys=12)
    assert verdicts(core.diagnose([evicted], ("cache",)), "memory") == [OK]
    assert verdicts(core.diagnose([evicted], ("cache", "lock")), "memory") == [OK, WARN]
    fragmented = node(mem_fragmentation_ratio=2.5, used_memory=GiB // 2)
    assert verdicts(core.diagnose([fragmented], ()), "memory") == [OK, WARN]
    assert node(used_memory="n/a").num("used_memory") == 0.0


def test_latency_and_slowlog() -> None:
    quiet = node()
    f = core.diagnose([quiet], ())
    assert verdicts(f, "latency") == [OK] and verdicts(f, "slowlog") == [OK]
    slow = ((250.0, "EVAL busy"), (3.0, "GET k"))
    spikes = (("command", 120.0, 480.0),)
    spiky = NodeFacts("n", node().info, {"latency-monitor-threshold": "0"}, slowlog=slow, latency=spikes)
    f = core.diagnose([spiky], ())
    assert verdicts(f, "latency") == [WARN, INFO]
    assert "command 480 ms" in by(f, "latency")[0][1]
    (v, msg), = by(f, "slowlog")  # fmt: skip
    assert v == WARN and "1 commands" in msg and "250 ms EVAL busy" in msg and "GET" not in msg
    assert core.exit_code(f) == 0 and core.exit_code(f, strict=True) == 1


def test_cluster_health() -> None:
    slots = ((0, 5460, "h:1", 1), (5461, 10922, "h:2", 1), (10923, 16383, "h:3", 1))
    good = ClusterFacts({"cluster_state": "ok", "cluster_slots_assigned": "16384"}, slots)
    assert verdicts(core.diagnose([], (), good), "cluster") == [OK, OK]
    bare = ClusterFacts(good.info, tuple((a, b, p, 0) for a, b, p, _ in slots))
    f = core.diagnose([], (), bare)
    assert verdicts(f, "cluster") == [OK, WARN]
    assert "3 of 3 primaries have no replica" in by(f, "cluster")[1][1]
    broken = {"cluster_state": "fail", "cluster_slots_assigned": "10923", "cluster_slots_pfail": "2"}
    holes = ClusterFacts(broken, slots[:2])
    f = core.diagnose([], (), holes)
    assert verdicts(f, "cluster") == [FAIL, WARN, OK]
    assert core.exit_code(f) == 1
    assert verdicts(core.diagnose([], (), ClusterFacts({}, ())), "cluster") == [FAIL]


def test_replication_note_and_replicas_skip_primary_checks() -> None:
    primary = node(connected_slaves=1)
    assert verdicts(core.diagnose([primary], ("lock",)), "replication") == [INFO]
    assert verdicts(core.diagnose([primary], ("cache",)), "replication") == []
    replica = node(role="slave", maxmemory_policy="allkeys-lru")
    f = core.diagnose([replica], ("lock",))
    assert verdicts(f, "eviction") == [] and verdicts(f, "memory") == [OK]


def test_exit_code_and_render_with_and_without_named_patterns() -> None:
    f = core.diagnose([node(maxmemory_policy="allkeys-lru")], ("lock",))
    assert core.exit_code(f) == 1 and core.exit_code(f, named=False) == 0
    lines = core.render(f)
    assert lines[-1] == "verdict: NOT READY: 1 blocking, 0 warnings"
    assert any(line.strip().startswith("fix: CONFIG SET maxmemory-policy noeviction") for line in lines)
    advisory = core.render(f, named=False)
    assert advisory[-2] == "verdict: ready" and "--uses" in advisory[-1]
    warn_only = core.render([Finding("memory", WARN, "m", "fix it", "n:1")], show_nodes=True)
    assert warn_only == [
        "  WARN  memory       m [n:1]",
        f"{'':20}fix: fix it",
        "verdict: ready, with 1 warnings",
    ]
    assert core.exit_code([]) == 0 and core.render([]) == ["verdict: ready"]


def test_patterns_parse() -> None:
    assert core.parse_patterns(None) == core.PATTERNS
    assert core.parse_patterns("all") == core.PATTERNS
    assert core.parse_patterns("locks, streams,cache,lock") == ("lock", "stream", "cache")
    assert core.parse_patterns(["store"]) == ("store",)
    with pytest.raises(ValueError, match="unknown pattern 'queue'"):
        core.parse_patterns("queue")
    with pytest.raises(ValueError, match="at least one"):
        core.parse_patterns(" , ")


def test_gather_parses_parsed_and_raw_replies() -> None:
    parsed = replay(
        core.gather("h:1", 8),
        [(Batch, [
            {"maxmemory": 0, "maxmemory_policy": "noeviction", "db0": {"keys": 1, "expires": 0}},
            {b"save": b"", b"appendonly": b"no"},
            [{"id": 1, "start_time": 1, "duration": 25000, "command": b"KEYS *"},
             {"id": 2, "start_time": 1, "duration": 12000, "command": b"HGETALL big"}],
            [[b"command", 1700000000, 120, 480]],
        ])],
    )  # fmt: skip
    assert parsed.info["maxmemory"] == "0" and parsed.info["db0"] == "keys=1,expires=0"
    assert parsed.config == {"save": "", "appendonly": "no"}
    assert parsed.slowlog == ((25.0, "KEYS *"), (12.0, "HGETALL big"))
    assert parsed.latency == (("command", 120.0, 480.0),)
    raw = replay(
        core.gather("h:1"),
        [(Batch, [
            b"# Server\r\nredis_version:7.0.15\r\nrole:master\r\n",
            [b"save", b"3600 1"],
            [[1, 1, 15000, [b"EVAL", b"x", 0]], "junk"],
            ["junk"],
        ])],
    )  # fmt: skip
    assert raw.info == {"redis_version": "7.0.15", "role": "master"} and raw.config == {"save": "3600 1"}
    assert raw.slowlog == ((15.0, "EVAL x 0"),) and raw.latency == ()
    refused = replay(core.gather("h:1"), [(Batch, [ValueError("x"), ValueError("CONFIG refused"), 3, None])])
    assert refused.info == {} and refused.config is None and refused.slowlog == () and refused.latency == ()
    assert replay(core.gather("h"), [(Batch, [3, ValueError(), ValueError(), ValueError()])]).info == {}


def test_cluster_facts_from_both_reply_shapes() -> None:
    dict_form = {(0, 16383): {"primary": (b"127.0.0.1", 7000), "replicas": [(b"127.0.0.1", 7001)]}}
    facts = replay(core.cluster_facts(), [(Batch, [{"cluster_state": "ok"}, dict_form])])
    assert facts.info == {"cluster_state": "ok"} and facts.slots == ((0, 16383, "127.0.0.1:7000", 1),)
    raw_form = [[0, 100, [b"h", 1, b"id"]], [101, 16383, [b"h", 2, b"id"], [b"h", 3, b"id"]]]
    facts = replay(core.cluster_facts(), [(Batch, [b"cluster_state:ok\r\n", raw_form])])
    assert facts.info == {"cluster_state": "ok"} and facts.slots == (
        (0, 100, "h:1", 0),
        (101, 16383, "h:2", 1),
    )
