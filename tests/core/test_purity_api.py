"""House rules that are checked, not hoped for: a pure core and a symmetric public API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import redispatterns as rp

CORE = Path(rp.__file__).resolve().parent / "_core"
FORBIDDEN = ("asyncio", "socket", "select", "selectors", "ssl", "subprocess", "threading",
             "multiprocessing", "concurrent", "time", "requests", "http", "urllib", "redis.client",
             "redis.asyncio", "redis.cluster", "redis.connection", "redis.sentinel")  # fmt: skip
ALLOWED_REDIS = ("redis.crc", "redis.exceptions")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_core_imports_nothing_that_does_io() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    bad = []
    for f in files:
        for mod in _imports(f):
            top_hit = any(mod == x or mod.startswith(x + ".") for x in FORBIDDEN)
            redis_hit = (mod == "redis" or mod.startswith("redis.")) and not mod.startswith(ALLOWED_REDIS)
            if top_hit or redis_hit:
                bad.append(f"{f.name}: import {mod}")
    assert not bad, "the sans-I/O core imports I/O modules:\n" + "\n".join(bad)


def test_purity_check_can_fail(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import time\nfrom redis.asyncio import Redis\nfrom redis.crc import key_slot\n")
    assert _imports(f) == ["time", "redis.asyncio", "redis.crc"]


def test_all_is_sorted_and_resolvable() -> None:
    assert rp.__all__ == sorted(rp.__all__)
    assert len(rp.__all__) == len(set(rp.__all__))
    for name in rp.__all__:
        assert getattr(rp, name) is not None, name


def test_all_is_exactly_the_public_names_each_under_its_real_name() -> None:
    import types

    public = {n for n, v in vars(rp).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - {"annotations", "TYPE_CHECKING"} == set(rp.__all__) - {"__version__"}
    for name in rp.__all__:
        value = getattr(rp, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__name__ == name, f"rp.{name} is really {value.__name__}"


def test_old_names_still_resolve_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="use redispatterns.LockHandle"):
        assert rp.Held is rp.LockHandle  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="use redispatterns.http.CookiePolicy"):
        assert rp.CookiePolicy is rp.http.CookiePolicy  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rp.Nope  # type: ignore[attr-defined]  # noqa: B018


def _public_methods(cls: type) -> dict[str, list[str]]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__enter__", "__call__"):
            continue
        if callable(member) or isinstance(inspect.getattr_static(cls, name, None), property):
            try:
                params = list(inspect.signature(member).parameters) if callable(member) else []
            except (TypeError, ValueError):
                params = []
            out[name] = [p for p in params if p != "self"]
    return out


def test_every_async_class_mirrors_its_sync_twin() -> None:
    pairs = [
        (n, n[5:])
        for n in rp.__all__
        if n.startswith("Async") and inspect.isclass(getattr(rp, n)) and n[5:] in rp.__all__
    ]
    mismatches = []
    for async_name, sync_name in pairs:
        a = _public_methods(getattr(rp, async_name))
        s = _public_methods(getattr(rp, sync_name))
        a.pop("__aenter__", None)
        s.pop("__enter__", None)
        if set(a) != set(s):
            mismatches.append(f"{sync_name}/{async_name}: {sorted(set(a) ^ set(s))}")
            continue
        for m in s:
            if a[m] != s[m]:
                mismatches.append(f"{sync_name}.{m}{s[m]} vs {async_name}.{m}{a[m]}")
    assert not mismatches, "\n".join(mismatches)


# Classes that hold values or configuration, not a client: they need no Async twin.
VALUE_TYPES = {
    "Backoff", "CacheStats", "CircuitBreaker", "Codec", "ConsumerStats", "CookiePolicy", "DeadLetter",
    "Decision", "LeaderboardEntry", "Gap", "JsonCodec", "KVInfo", "KeyValueStoreMetadata",
    "KeyValueStoreRecord", "KeyValueStoreRecordMetadata", "Keyspace", "Mount", "Namespace", "PickleCodec",
    "Policy", "PolicyState", "PubSubMessage", "RequestInfo", "ServerInfo", "Session",
    "SessionInfo", "SessionSummary", "SummaryStats", "TrackEvent", "StreamStats", "SubscriberStats",
}  # fmt: skip
# Middlewares speak two different protocols (WSGI, ASGI): a pair by protocol, not by prefix.
PROTOCOL_PAIRS = {
    "WSGIRateLimitMiddleware": "ASGIRateLimitMiddleware",
    "WSGISessionMiddleware": "ASGISessionMiddleware",
}


def test_every_io_class_has_an_async_twin() -> None:
    missing = []
    for name in rp.__all__:
        obj = getattr(rp, name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException) or name.startswith("Async"):
            continue
        if name in VALUE_TYPES or name.startswith("ASGI"):
            continue
        if name in PROTOCOL_PAIRS:
            assert PROTOCOL_PAIRS[name] in rp.__all__, name
            continue
        if "Async" + name not in rp.__all__:
            missing.append(name)
    assert not missing, f"public classes without an Async twin: {missing}"


# The runner layer owns every socket, thread, task, sleep and clock read (ARCHITECTURE.md);
# otel.py wraps the runners when instrumented and times their calls.
RUNNER_LAYER = {"_runner.py", "_links.py", "_tracking.py", "client.py", "_compat.py", "_pools.py",
                "_loops.py", "otel.py"}  # fmt: skip
SHELL_IO = {
    ("threading", "Thread"), ("concurrent", "futures"), ("asyncio", "create_task"),
    ("asyncio", "ensure_future"), ("asyncio", "sleep"), ("time", "sleep"), ("time", "monotonic"),
    ("time", "time"), ("time", "perf_counter"),
}  # fmt: skip
SHELL_CALLS = {"execute_command", "pipeline", "ThreadPoolExecutor", "create_task", "get_connection"}


def _io_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        base = node.value if isinstance(node, ast.Attribute) else None
        if (
            isinstance(node, ast.Attribute)
            and isinstance(base, ast.Name)
            and (base.id, node.attr) in SHELL_IO
        ):
            found.append(f"{path.name}:{node.lineno}: {base.id}.{node.attr}")
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in SHELL_CALLS:
                found.append(f"{path.name}:{node.lineno}: {name}()")
    return found


def test_shells_leave_all_io_to_the_runner_layer() -> None:
    package = CORE.parent
    shells = [p for p in sorted(package.glob("*.py")) if p.name not in RUNNER_LAYER]
    assert len(shells) >= 12
    found = [hit for p in shells for hit in _io_in(p)]
    assert not found, "I/O outside the runner layer:\n" + "\n".join(found)


def test_the_shell_io_check_can_fail(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import time, threading\nthreading.Thread(target=print)\ntime.sleep(1)\nc.pipeline()\n")
    assert sorted(_io_in(f)) == ["x.py:2: threading.Thread", "x.py:3: time.sleep", "x.py:4: pipeline()"]
