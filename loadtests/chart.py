"""Draw a bench run (the JSON of ``run_bench --json``) as one PNG: each case's cost as a ratio to
its raw redis-py floor, redispatterns in one colour and the peers measured in the same run in
another, with the machine, server and versions in the title. Needs matplotlib (the bench group)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

# a case measured at several sizes names its size: "top N=1000", "drain count=100", "limit=10000"
SIZE = re.compile(r"\b(?:N|n|count|limit)=(\d[\d_]*)")

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
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
        f"{' (' + data['placement'] + ')' if data.get('placement') else ''}; "
        f"Python {data.get('python', '?')}, {versions}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def growth_series(data: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Cases measured at several sizes: ``{"pattern: case (flavour)": [(size, ratio), ...]}``."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in data["results"]:
        m = SIZE.search(r["case"])
        if not m or not r.get("ratio"):
            continue
        stem = SIZE.sub("N", r["case"])
        series.setdefault(f"{r['pattern']}: {stem} ({r['flavour']})", []).append(
            (int(m.group(1).replace("_", "")), r["ratio"])
        )
    return {k: sorted(v) for k, v in series.items() if len(v) > 1}


def draw_growth(data: dict[str, Any], path: str) -> bool:
    """How the ratio to the floor moves with the batch size, one line per case; False (and no
    file) when the run has no case measured at several sizes."""
    series = growth_series(data)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for label, points in sorted(series.items()):
        ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("batch size N (records, entries, messages)")
    ax.set_ylabel("ratio to the same work by hand (1.0 = the floor)")
    ax.legend(fontsize=7)
    server = data.get("server") or {}
    ax.set_title(f"how cost grows with N: {server.get('name', '?')} {server.get('version', '?')}, "
                 f"{data.get('taken_at', '')}", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        draw(json.load(fh), sys.argv[2])
