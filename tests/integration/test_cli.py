"""``python -m redispatterns doctor|demo``: real servers, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from redispatterns.testing import free_port
from redispatterns.testing.plugin import Backend


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redispatterns", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_doctor_reports_server_and_topology(backend: Backend) -> None:
    if backend.is_fake:
        return
    assert backend.url and backend.kind
    out = _cli("doctor", "--url", backend.url)
    assert out.returncode == 0, out.stderr
    assert f"{backend.kind.name.split('-')[0]} {backend.kind.version}" in out.stdout
    if backend.is_cluster:
        assert out.stdout.count("primary 127.0.0.1:") == 3
        assert "cluster" in out.stdout
    else:
        assert "standalone" in out.stdout


def test_down_server_is_one_line() -> None:
    out = _cli("doctor", "--url", f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_bad_url_is_one_line() -> None:
    for url in ("http://x", "redis+sentinel://h1:26379", "redis+cluster://h:notaport"):
        out = _cli("doctor", "--url", url)
        assert out.returncode == 2, url
        assert out.stderr.count("\n") == 1, out.stderr
        assert "bad" in out.stderr and "Traceback" not in out.stderr


def test_demo_runs_on_redis_url(standalone_url: str) -> None:
    out = _cli("demo", env={"REDIS_URL": standalone_url})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Tour complete." in out.stdout
    assert "Started a private" not in out.stdout


def test_demo_down_server_is_one_line() -> None:
    out = _cli("demo", env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert out.returncode == 2
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_version_names_the_package_and_what_it_runs_on() -> None:
    import redispatterns

    for args in (("--version",), ("doctor", "--version")):
        out = _cli(*args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"redispatterns {redispatterns.__version__} (redis "), out.stdout
        assert "hiredis" in out.stdout and "Python" in out.stdout


def test_doctor_without_a_url_hints_at_the_embedded_server() -> None:
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 6379)) == 0:
            pytest.skip("something listens on localhost:6379")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "redispatterns", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2
    assert "cannot reach" in out.stderr and "redispatterns demo" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
