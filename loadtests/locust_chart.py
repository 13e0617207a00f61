"""An SVG chart of a Locust run from its ``*_stats_history.csv`` (no plotting library needed):
requests/s and the p50/p95/p99 response times over time.

``python -m loadtests.locust_chart loadtests/out/http_stats_history.csv out.svg``
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

W, H, PAD = 720, 300, 48


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _polyline(points: list[tuple[float, float]], color: str) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'


def render(history: Path, title: str) -> str:
    rows = [r for r in csv.DictReader(history.open()) if r["Name"] == "Aggregated"]
    t0 = int(rows[0]["Timestamp"]) if rows else 0
    series: dict[str, list[tuple[float, float]]] = {"req/s": [], "p50": [], "p95": [], "p99": []}
    for r in rows:
        t = int(r["Timestamp"]) - t0
        for name, col in (("req/s", "Requests/s"), ("p50", "50%"), ("p95", "95%"), ("p99", "99%")):
            v = _num(r[col])
            if v is not None and (name != "req/s" or v > 0):
                series[name].append((t, v))
    t_max = max((t for s in series.values() for t, _ in s), default=1) or 1
    rps_max = max((v for _, v in series["req/s"]), default=1) or 1
    ms_max = max((v for n in ("p50", "p95", "p99") for _, v in series[n]), default=1) or 1

    def xy(t: float, v: float, top: float) -> tuple[float, float]:
        return PAD + (W - 2 * PAD) * t / t_max, H - PAD - (H - 2 * PAD) * v / top

    colors = {"req/s": "#1f77b4", "p50": "#2ca02c", "p95": "#ff7f0e", "p99": "#d62728"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
        f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{PAD}" y="20" font-size="14">{title}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>',
        f'<text x="{W // 2}" y="{H - 12}">seconds</text>',
        f'<text x="4" y="{PAD - 6}" fill="{colors["req/s"]}">req/s (max {rps_max:.0f})</text>',
        f'<text x="{W - PAD - 150}" y="{PAD - 6}">ms (max {ms_max:.0f}, right scale)</text>',
    ]
    parts.append(_polyline([xy(t, v, rps_max) for t, v in series["req/s"]], colors["req/s"]))
    for name in ("p50", "p95", "p99"):
        parts.append(_polyline([xy(t, v, ms_max) for t, v in series[name]], colors[name]))
    for i, name in enumerate(series):
        parts.append(f'<text x="{PAD + 90 * i}" y="{H - 28}" fill="{colors[name]}">— {name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> int:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    title = sys.argv[3] if len(sys.argv) > 3 else "Locust over HTTP"
    dst.write_text(render(src, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
