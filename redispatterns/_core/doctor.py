"""``doctor`` for production (seed S2): what a server must be for the patterns an application uses.

Pure: :func:`gather` is a flow that asks one node for its facts in one pipeline (``INFO``,
``CONFIG GET *``, ``SLOWLOG GET``, ``LATENCY LATEST``; a managed service that refuses ``CONFIG``
still gets the checks that ``INFO`` answers); :func:`diagnose` turns the facts of every node, the
cluster's slot table and the patterns in use into :class:`Finding` values, each with a verdict
and, where something is off, the fix. A ``FAIL`` is blocking: ``python -m redispatterns doctor``
exits 1 on one, so a deploy pipeline can stop on it.

The rules, per pattern (``PATTERNS``):

* *Eviction.* ``allkeys-*`` may evict any key under memory pressure: a lock (two holders), a
  stream and its consumer groups (lost entries), a limiter's state (a burst admitted), a store's
  records. ``volatile-*`` evicts keys that carry a TTL, and locks, limiter state and sessions do.
  Caches want eviction; everything else wants ``noeviction`` (or its own instance).
* *Persistence.* Fencing tokens must never repeat after a restart, stream entries and store
  records must survive one: without AOF or RDB that is a ``FAIL``, with RDB only a ``WARN`` (the
  writes since the last snapshot are lost), AOF with ``appendfsync everysec`` or ``always`` is
  ``OK``. A failing background save or AOF write is a ``FAIL`` for every pattern.
* *Memory.* A ``maxmemory`` limit must be set; headroom under it (``FAIL`` above 95 % with
  ``noeviction``: writes are about to be refused), evictions that already happened, fragmentation.
* *Latency.* ``LATENCY LATEST`` spikes and ``SLOWLOG`` entries above 10 ms are reported (``WARN``:
  Redis runs commands one at a time, so one slow command stalls every client).
* *Cluster.* Every slot assigned and ``cluster_state:ok`` (else ``FAIL``), a replica per primary
  (else ``WARN``: a lost primary takes its slots' data with it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .codec import as_str
from .ops import Batch, Command, Flow

__all__ = [
    "FAIL",
    "INFO",
    "OK",
    "PATTERNS",
    "WARN",
    "ClusterFacts",
    "Finding",
    "NodeFacts",
    "cluster_facts",
    "diagnose",
    "exit_code",
    "gather",
    "parse_patterns",
    "parse_slots",
    "render",
]

OK, INFO, WARN, FAIL = "OK", "INFO", "WARN", "FAIL"
_RANK = {OK: 0, INFO: 1, WARN: 2, FAIL: 3}

PATTERNS = ("cache", "session", "ratelimit", "lock", "stream", "pubsub", "leaderboard", "kv", "store")
_ALIASES = {"sessions": "session", "limiter": "ratelimit", "limiters": "ratelimit", "locks": "lock",
            "streams": "stream", "caches": "cache", "leaderboards": "leaderboard", "stores": "store",
            "semaphore": "lock", "fence": "lock", "fences": "lock"}  # fmt: skip

# what eviction costs each pattern (None: the pattern is fine with it)
_EVICTED = {
    "lock": (FAIL, "a lock or semaphore lease evicted while held lets a second holder in"),
    "stream": (FAIL, "stream entries and consumer-group state evicted are messages lost"),
    "kv": (FAIL, "kv records evicted are data lost"),
    "store": (FAIL, "key-value store records evicted are data lost, and the store metadata lies"),
    "ratelimit": (WARN, "a limiter's state evicted resets it: a burst over the limit is admitted"),
    "session": (WARN, "sessions evicted log their users out"),
    "leaderboard": (WARN, "a leaderboard evicted loses its scores"),
}
# patterns whose keys carry a TTL (so volatile-* policies can evict them)
_HAS_TTL = frozenset({"lock", "ratelimit", "session"})
# what a restart without persistence costs
_VOLATILE = {
    "lock": (FAIL, "fencing tokens restart from an old value, so a stale holder's token passes again"),
    "stream": (FAIL, "every stream entry and consumer group is lost"),
    "store": (FAIL, "every key-value store is lost"),
    "kv": (FAIL, "every kv record is lost"),
    "session": (WARN, "every user is logged out"),
    "leaderboard": (WARN, "every score is lost"),
}
SLOW_MS = 10.0
LATENCY_MS = 100.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict (``OK``/``INFO``/``WARN``/``FAIL``), what it saw and how to fix it."""

    check: str
    verdict: str
    message: str
    fix: str = ""
    node: str = ""
    by_pattern: bool = False  # the verdict depends on the patterns in use


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What one node said: ``INFO`` fields, ``CONFIG`` (``None`` when refused), slow log, latency."""

    address: str
    info: Mapping[str, str]
    config: Mapping[str, str] | None
    slowlog: tuple[tuple[float, str], ...] = ()  # (milliseconds, command)
    latency: tuple[tuple[str, float, float], ...] = ()  # (event, latest ms, max ms)

    def get(self, name: str, default: str = "") -> str:
        return self.info.get(name, default)

    def num(self, name: str) -> float:
        try:
            return float(self.info.get(name, "0") or 0)
        except ValueError:
            return 0.0


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    """``CLUSTER INFO`` fields and the slot table: (start, end, primary address, replicas)."""

    info: Mapping[str, str]
    slots: tuple[tuple[int, int, str, int], ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- gathering


def _flat_map(reply: Any) -> dict[str, str]:
    if isinstance(reply, Mapping):
        return {as_str(k): _scalar(v) for k, v in reply.items()}
    if isinstance(reply, (list, tuple)):
        return {as_str(reply[i]): _scalar(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
    if isinstance(reply, (bytes, str)):  # raw INFO text
        out = {}
        for line in as_str(reply).splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
        return out
    return {}


def _scalar(v: Any) -> str:
    if isinstance(v, (bytes, str)):
        return as_str(v)
    if isinstance(v, Mapping):  # INFO sub-fields (db0: {keys: 1, ...})
        return ",".join(f"{as_str(k)}={_scalar(x)}" for k, x in v.items())
    return str(v)


def _slowlog(reply: Any) -> tuple[tuple[float, str], ...]:
    out = []
    for entry in reply if isinstance(reply, (list, tuple)) else ():
        if isinstance(entry, Mapping):  # redis-py's parsed form
            us, cmd = entry.get("duration", 0), entry.get("command", b"")
        elif isinstance(entry, (list, tuple)) and len(entry) >= 4:  # raw: id, time, duration, args
            us, cmd = entry[2], b" ".join(x if isinstance(x, bytes) else str(x).encode() for x in entry[3])
        else:
            continue
        out.append((int(us) / 1000.0, as_str(cmd)[:80]))
    return tuple(sorted(out, reverse=True))


def _latency(reply: Any) -> tuple[tuple[str, float, float], ...]:
    out = []
    for row in reply if isinstance(reply, (list, tuple)) else ():
        if isinstance(row, (list, tuple)) and len(row) >= 4:
            out.append((as_str(row[0]), float(row[2]), float(row[3])))
    return tuple(out)


def gather(address: str, slowlog_entries: int = 32) -> Flow[NodeFacts]:
    """One node's facts in one round trip; a refused command leaves its part empty."""
    info, config, slow, latency = yield Batch(
        (
            Command("INFO", "everything"),
            Command("CONFIG", "GET", "*"),
            Command("SLOWLOG", "GET", slowlog_entries),
            Command("LATENCY", "LATEST"),
        ),
        raise_on_error=False,
    )
    return NodeFacts(
        address=address,
        info=_flat_map(info) if not isinstance(info, Exception) else {},
        config=None if isinstance(config, Exception) else _flat_map(config),
        slowlog=() if isinstance(slow, Exception) else _slowlog(slow),
        latency=() if isinstance(latency, Exception) else _latency(latency),
    )


def parse_slots(reply: Any) -> tuple[tuple[int, int, str, int], ...]:
    """``CLUSTER SLOTS`` (redis-py's dict or the raw list) as (start, end, primary, replicas)."""
    rows: list[tuple[int, int, str, int]] = []
    if isinstance(reply, Mapping):
        for (start, end), node in reply.items():
            host, port = node["primary"][0], node["primary"][1]
            rows.append((int(start), int(end), f"{as_str(host)}:{port}", len(node.get("replicas", []))))
    else:
        for start, end, primary, *replicas in reply or ():
            rows.append((int(start), int(end), f"{as_str(primary[0])}:{primary[1]}", len(replicas)))
    return tuple(sorted(rows))


def cluster_facts() -> Flow[ClusterFacts]:
    """``CLUSTER INFO`` and ``CLUSTER SLOTS`` of one node, in one round trip."""
    info, slots = yield Batch((Command("CLUSTER", "INFO"), Command("CLUSTER", "SLOTS")))
    return ClusterFacts(info=_flat_map(info), slots=parse_slots(slots))


def parse_patterns(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"cache,locks"`` -> ``("cache", "lock")``; ``None`` or ``"all"``: every pattern."""
    if text is None:
        return PATTERNS
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name == "all":
            return PATTERNS
        name = _ALIASES.get(name, name)
        if name not in PATTERNS:
            raise ValueError(f"unknown pattern {raw.strip()!r}: use any of {', '.join(PATTERNS)} or 'all'")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"name at least one pattern ({', '.join(PATTERNS)}) or 'all'")
    return tuple(out)


# --------------------------------------------------------------------------- checks


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _eviction(node: NodeFacts, uses: Sequence[str]) -> list[Finding]:
    policy = node.get("maxmemory_policy") or (node.config or {}).get("maxmemory-policy", "")
    limit = node.num("maxmemory")
    if not policy:
        return [Finding("eviction", INFO, "the server does not report maxmemory_policy", node=node.address)]
    out: list[Finding] = []
    at_risk: list[tuple[str, str]] = []
    what = ""
    if policy.startswith("allkeys-"):
        at_risk = [_EVICTED[p] for p in uses if p in _EVICTED]
        what = "any key"
    elif policy.startswith("volatile-"):
        at_risk = [_EVICTED[p] for p in uses if p in _EVICTED and p in _HAS_TTL]
        what = "keys with a TTL (locks, limiter state and sessions carry one)"
    if at_risk:
        worst = max((v for v, _ in at_risk), key=_RANK.__getitem__)
        if not limit:
            worst = WARN  # no maxmemory: nothing is evicted yet
        reasons = "; ".join(r for _, r in at_risk)
        inert = "" if limit else " (inert while maxmemory is 0, dangerous once a limit is set)"
        out.append(
            Finding(
                "eviction",
                worst,
                f"maxmemory-policy {policy} evicts {what} under memory pressure{inert}: {reasons}",
                "CONFIG SET maxmemory-policy noeviction here, and serve caches from their own instance "
                "with allkeys-lru (or allkeys-lfu)",
                node.address,
            )
        )
    elif policy == "noeviction" and "cache" in uses and limit:
        also = [p for p in uses if p != "cache"]
        out.append(
            Finding(
                "eviction",
                WARN if also else OK,
                "noeviction: once memory is full, cache writes are refused (OOM)"
                + (f", and so are the writes of {', '.join(also)}" if also else "; caches keep serving"),
                "give caches their own instance with allkeys-lru, or keep them well under maxmemory",
                node.address,
            )
        )
    else:
        out.append(
            Finding(
                "eviction", OK, f"maxmemory-policy {policy} keeps what these patterns need", node=node.address
            )
        )
    return out


def _disk(node: NodeFacts) -> list[Finding]:
    out: list[Finding] = []
    for field_, what in (
        ("rdb_last_bgsave_status", "the last background save"),
        ("aof_last_write_status", "the last AOF write"),
    ):
        if node.get(field_, "ok") not in ("ok", ""):
            out.append(
                Finding(
                    "persistence",
                    FAIL,
                    f"{what} failed ({field_}:{node.get(field_)}): with stop-writes-on-bgsave-error "
                    "the server refuses writes",
                    "check the disk (space, permissions) in the server log",
                    node.address,
                )
            )
    return out


def _persistence(node: NodeFacts, uses: Sequence[str]) -> list[Finding]:
    out: list[Finding] = []
    needs = [(p, *_VOLATILE[p]) for p in uses if p in _VOLATILE]
    if not needs:
        return out
    aof = node.get("aof_enabled") == "1"
    save = None if node.config is None else node.config.get("save", "")
    fsync = (node.config or {}).get("appendfsync", "")
    names = ", ".join(p for p, _, _ in needs)
    if aof:
        if fsync == "no":
            out.append(
                Finding(
                    "persistence",
                    WARN,
                    f"AOF on with appendfsync no: a crash loses up to ~30 s of writes ({names})",
                    "CONFIG SET appendfsync everysec",
                    node.address,
                )
            )
        else:
            out.append(
                Finding(
                    "persistence", OK, f"AOF on (appendfsync {fsync or '?'}) for {names}", node=node.address
                )
            )
    elif save is None:
        out.append(
            Finding(
                "persistence",
                INFO,
                f"AOF is off and CONFIG is refused, so RDB snapshots cannot be checked "
                f"({names} need persistence)",
                "confirm snapshots or AOF with your provider",
                node.address,
            )
        )
    elif save.strip():
        out.append(
            Finding(
                "persistence",
                WARN,
                f"RDB snapshots only (save {save}): a restart loses the writes since the last "
                f"snapshot ({names})",
                "CONFIG SET appendonly yes (appendfsync everysec), then CONFIG REWRITE",
                node.address,
            )
        )
    else:
        worst = max((v for _, v, _ in needs), key=_RANK.__getitem__)
        reasons = "; ".join(f"{p}: {r}" for p, _, r in needs)
        out.append(
            Finding(
                "persistence",
                worst,
                f"no persistence (AOF off, no RDB snapshots): a restart loses everything. {reasons}",
                "CONFIG SET appendonly yes (appendfsync everysec), then CONFIG REWRITE",
                node.address,
            )
        )
    return out


def _memory(node: NodeFacts, uses: Sequence[str]) -> list[Finding]:
    used, limit = node.num("used_memory"), node.num("maxmemory")
    policy = node.get("maxmemory_policy")
    out: list[Finding] = []
    if not limit:
        total = node.num("total_system_memory")
        share = f" ({used / total:.0%} of the machine's {_mb(total)})" if total else ""
        out.append(
            Finding(
                "memory",
                WARN,
                f"no maxmemory: {_mb(used)} used{share}; memory grows until the OS kills the server",
                "CONFIG SET maxmemory <about 75% of the RAM left to Redis>",
                node.address,
            )
        )
    else:
        ratio = used / limit
        text = f"{_mb(used)} of maxmemory {_mb(limit)} used ({ratio:.0%})"
        if ratio >= 0.95 and policy == "noeviction":
            fix = "raise maxmemory, or free memory (TTLs, trimming streams)"
            out.append(
                Finding(
                    "memory",
                    FAIL,
                    text + ": with noeviction, writes are about to be refused",
                    fix,
                    node.address,
                )
            )
        elif ratio >= 0.80:
            out.append(
                Finding(
                    "memory", WARN, text + ": little headroom", "raise maxmemory or free memory", node.address
                )
            )
        else:
            out.append(Finding("memory", OK, text, node=node.address))
    evicted = int(node.num("evicted_keys"))
    if evicted and any(p != "cache" for p in uses):
        out.append(
            Finding(
                "memory",
                WARN,
                f"{evicted} keys were evicted since the server started",
                "make sure nothing but caches can be evicted (see eviction)",
                node.address,
            )
        )
    frag = node.num("mem_fragmentation_ratio")
    if frag > 1.5 and used > 256 * 2**20:
        out.append(
            Finding(
                "memory",
                WARN,
                f"fragmentation ratio {frag:.2f}: the OS holds far more than the data needs",
                "CONFIG SET activedefrag yes",
                node.address,
            )
        )
    return out


def _latency_checks(node: NodeFacts) -> list[Finding]:
    out: list[Finding] = []
    spikes = [(e, latest, worst) for e, latest, worst in node.latency if worst >= LATENCY_MS]
    if spikes:
        text = ", ".join(f"{e} {worst:.0f} ms" for e, _, worst in spikes[:4])
        out.append(
            Finding(
                "latency",
                WARN,
                f"latency spikes recorded: {text}",
                "LATENCY DOCTOR on the node explains them",
                node.address,
            )
        )
    threshold = (node.config or {}).get("latency-monitor-threshold")
    if threshold == "0":
        out.append(
            Finding(
                "latency",
                INFO,
                "the latency monitor is off",
                "CONFIG SET latency-monitor-threshold 100",
                node.address,
            )
        )
    elif not spikes and node.config is not None:
        out.append(Finding("latency", OK, "no latency spike recorded", node=node.address))
    slow = [(ms, cmd) for ms, cmd in node.slowlog if ms >= SLOW_MS]
    if slow:
        top = "; ".join(f"{ms:.0f} ms {cmd}" for ms, cmd in slow[:3])
        out.append(
            Finding(
                "slowlog",
                WARN,
                f"{len(slow)} commands took {SLOW_MS:.0f} ms or more (slowest: {top}); "
                "one slow command stalls every client",
                "page O(N) commands on big keys (KEYS, HGETALL, SMEMBERS, long scripts) with SCAN",
                node.address,
            )
        )
    else:
        out.append(
            Finding(
                "slowlog", OK, f"no command in the slow log took {SLOW_MS:.0f} ms or more", node=node.address
            )
        )
    return out


def _cluster(cluster: ClusterFacts) -> list[Finding]:
    out: list[Finding] = []
    state = cluster.info.get("cluster_state", "")
    assigned = int(cluster.info.get("cluster_slots_assigned", "0") or 0)
    failing = int(cluster.info.get("cluster_slots_fail", "0") or 0)
    pfail = int(cluster.info.get("cluster_slots_pfail", "0") or 0)
    covered = sum(end - start + 1 for start, end, _, _ in cluster.slots)
    if state != "ok" or assigned < 16384 or covered < 16384 or failing:
        out.append(
            Finding(
                "cluster",
                FAIL,
                f"cluster_state {state or '?'}, {max(assigned, covered)} of 16384 slots assigned, "
                f"{failing} failing: keys in the uncovered slots cannot be read or written",
                "assign the missing slots (valkey-cli --cluster fix) and bring failed nodes back",
            )
        )
    else:
        out.append(Finding("cluster", OK, "cluster_state ok, all 16384 slots assigned"))
    if pfail:
        out.append(
            Finding("cluster", WARN, f"{pfail} slots on nodes suspected down (pfail)", "check those nodes")
        )
    bare = sorted({primary for _, _, primary, replicas in cluster.slots if replicas == 0})
    if bare:
        out.append(
            Finding(
                "cluster",
                WARN,
                f"{len(bare)} of {len({p for _, _, p, _ in cluster.slots})} primaries have no replica "
                f"({', '.join(bare[:4])}): losing one loses its slots' data",
                "add a replica per primary (valkey-cli --cluster add-node --cluster-slave)",
            )
        )
    elif cluster.slots:
        out.append(Finding("cluster", OK, "every primary has a replica"))
    return out


def _replication(node: NodeFacts, uses: Sequence[str]) -> list[Finding]:
    if node.get("role") != "master" or "lock" not in uses or not int(node.num("connected_slaves")):
        return []
    return [
        Finding(
            "replication",
            INFO,
            "locks on a replicated primary: a failover can lose a lock granted just before it "
            "(replication is asynchronous)",
            "use Redlock over independent masters, or fencing tokens, where that matters",
            node.address,
        )
    ]


def _by_pattern(findings: list[Finding]) -> list[Finding]:
    return [replace(f, by_pattern=True) for f in findings]


def diagnose(
    nodes: Sequence[NodeFacts], uses: Sequence[str], cluster: ClusterFacts | None = None
) -> list[Finding]:
    """Every finding for these nodes and patterns (primaries are checked; replicas only for memory)."""
    out: list[Finding] = []
    for node in nodes:
        if node.get("role", "master") == "master":
            out += _by_pattern(_eviction(node, uses))
            out += _disk(node)
            out += _by_pattern(_persistence(node, uses))
            out += _by_pattern(_replication(node, uses))
        out += _memory(node, uses)
        out += _latency_checks(node)
    if cluster is not None:
        out += _cluster(cluster)
    return out


def exit_code(findings: Iterable[Finding], *, strict: bool = False, named: bool = True) -> int:
    """1 when a finding blocks (a ``FAIL``; a ``WARN`` too when ``strict``), else 0.

    ``named=False`` (no ``--uses``): the verdicts that depend on the patterns are advice only,
    since the application did not say which it uses; the server's own health still blocks.
    """
    ranks = [_RANK[f.verdict] for f in findings if named or not f.by_pattern]
    worst = max(ranks, default=0)
    return 1 if worst >= _RANK[FAIL] or (strict and worst >= _RANK[WARN]) else 0


def render(findings: Sequence[Finding], *, show_nodes: bool = False, named: bool = True) -> list[str]:
    """The findings as lines: verdict, check, message, then the fix; last, the verdict line."""
    lines = []
    for f in findings:
        where = f" [{f.node}]" if show_nodes and f.node else ""
        lines.append(f"  {f.verdict:<4}  {f.check:<12} {f.message}{where}")
        if f.fix and f.verdict in (WARN, FAIL, INFO):
            lines.append(f"{'':20}fix: {f.fix}")
    gating = [f for f in findings if named or not f.by_pattern]
    fails = sum(f.verdict == FAIL for f in gating)
    warns = sum(f.verdict == WARN for f in gating)
    if fails:
        lines.append(f"verdict: NOT READY: {fails} blocking, {warns} warnings")
    elif warns:
        lines.append(f"verdict: ready, with {warns} warnings")
    else:
        lines.append("verdict: ready")
    advice = sum(f.verdict == FAIL for f in findings if f.by_pattern) if not named else 0
    if advice:
        lines.append(
            f"         ({advice} more would block for some pattern: name yours with --uses, e.g. "
            "--uses cache,lock, to gate on them)"
        )
    return lines
