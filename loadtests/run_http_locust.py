"""``make loadtest``: Locust over HTTP against the example shop, bounded in users and time.

Starts a private server (unless ``REDIS_URL`` is set) and the web service (uvicorn,
``WEBAPP_WORKERS`` workers, loopback only), runs ``loadtests/http_locustfile.py`` headless and
prints requests/s, p50/p95/p99 and failures per endpoint; the HTML report, the CSVs and an
SVG chart go to ``loadtests/out/``. Environment: ``LOCUST_USERS`` (100), ``LOCUST_SPAWN`` (10 a second),
``LOCUST_TIME`` (60s), ``WEBAPP_PORT`` (a free one), ``WEBAPP_WORKERS`` (2); ``LOCUST_UI=1`` opens the
web UI on http://127.0.0.1:8089 instead (stop with Ctrl-C).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from loadtests.harness import private_server
from loadtests.locust_chart import render
from loadtests.webapp_server import ROOT, serve
from redispatterns.testing.servers import free_port

OUT = ROOT / "loadtests" / "out"


def table(stats_csv: Path) -> str:
    """The summary: one row per endpoint, then the total."""
    rows = list(csv.DictReader(stats_csv.open()))
    head = (
        f"{'endpoint':34} {'requests':>8} {'fails':>6} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        name = "TOTAL" if r["Name"] == "Aggregated" else f"{r['Type']} {r['Name']}"
        out.append(
            f"{name[:34]:34} {int(r['Request Count']):8d} {int(r['Failure Count']):6d} "
            f"{float(r['Requests/s']):8.1f} {r['50%']:>7} {r['95%']:>7} {r['99%']:>7}"
        )
    return "\n".join(out)


def main() -> int:
    users = os.environ.get("LOCUST_USERS", "100")
    spawn = os.environ.get("LOCUST_SPAWN", "10")
    duration = os.environ.get("LOCUST_TIME", "60s")
    port = int(os.environ.get("WEBAPP_PORT") or free_port())
    workers = int(os.environ.get("WEBAPP_WORKERS", "2"))
    ui = os.environ.get("LOCUST_UI") == "1"
    OUT.mkdir(exist_ok=True)
    locustfile = ROOT / "loadtests" / "http_locustfile.py"
    with private_server() as url, serve(url, port, workers) as base:
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", base, "-u", users,
               "-r", spawn, "--csv", str(OUT / "http"), "--html", str(OUT / "http.html")]  # fmt: skip
        if ui:
            cmd += ["--web-host", "127.0.0.1"]
        else:
            cmd += ["--headless", "-t", duration, "--only-summary"]
        print("$", " ".join(cmd), flush=True)
        code = subprocess.call([*cmd, *sys.argv[1:]], cwd=ROOT)
    stats = OUT / "http_stats.csv"
    if stats.exists():
        print(f"\nLocust over HTTP: {users} users, {duration}, {workers} uvicorn workers")
        print(f"report: {OUT / 'http.html'}")
        print(table(stats))
        history = OUT / "http_stats_history.csv"
        if history.exists():
            (OUT / "http.svg").write_text(render(history, f"make loadtest: {users} visitors, {duration}"))
            print(f"chart: {OUT / 'http.svg'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
