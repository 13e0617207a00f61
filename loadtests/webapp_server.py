"""The example web service under uvicorn, on loopback: ``make webapp`` (foreground) and the
server ``make loadtest`` drives.

Environment: ``REDIS_URL`` (default: a private embedded server), ``WEBAPP_PORT`` (8000),
``WEBAPP_WORKERS`` (2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from loadtests.harness import private_server

ROOT = Path(__file__).resolve().parent.parent


def command(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "examples"), "webapp.app:create_app",
            "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning"]  # fmt: skip


@contextlib.contextmanager
def serve(redis_url: str, port: int, workers: int, timeout: float = 30.0) -> Iterator[str]:
    """Start the service, wait for ``/health``, yield its base URL; stop it (by its pid) after."""
    env = dict(os.environ, REDIS_URL=redis_url)
    proc = subprocess.Popen(command(port, workers), env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the web service did not start (exit {proc.poll()})") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    port = int(os.environ.get("WEBAPP_PORT", "8000"))
    workers = int(os.environ.get("WEBAPP_WORKERS", "2"))
    with private_server() as url, serve(url, port, workers) as base:
        print(f"the shop is at {base}/docs (Redis: {url}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
