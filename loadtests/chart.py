"""Draw a bench run (the JSON of ``run_bench --json``) as one PNG: each case's cost as a ratio to
its raw redis-py floor, redispatterns in one colour and the peers measured in the same run in
another, with the machine, server and versions in the title. Needs matplotlib (the bench group)."""

from __future__ import annotations

import json
import sys
from typing import Any

OURS, PEER = "#c0392b", "#7f8c8d"


def draw(data: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["results"] if r.get("ratio")]
    rows.sort(key=lambda r: (r["pattern"], r["peer"], r["flavour"], r["case"]))
    labels = [f"{r['pattern']}: {r['case']} ({r['flavour']})" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(rows) + 1.6))
    ax.barh(range(len(rows)), ratios, color=[PEER if r["peer"] else OURS for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, v in enumerate(ratios):
        ax.text(v, i, f" {v:.2f}x", va="center", fontsize=6)
    ax.set_xlabel("cost as a ratio to the same commands sent by hand with redis-py (1.0 = the floor)")
    server = data.get("server") or {}
    machine = data.get("machine") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (data.get("versions") or {}).items() if v)
    ax.set_title(
        f"redispatterns (red) and peers (grey), {data.get('taken_at', '')}\n"
        f"{server.get('name', '?')} {server.get('version', '?')} on loopback; "
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
        f"Python {data.get('python', '?')}, {versions}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        draw(json.load(fh), sys.argv[2])
