"""Compare two bench runs: ``python -m loadtests.compare BASE.json HEAD.json``.

One line per case present in either run: the ratio to the floor before and after, and the change.
The ratio, not the raw time, is compared: each run measured its own floor in the same process, so
a busier or quieter machine between the runs moves both alike.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _index(path: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return {(r["pattern"], r["case"], r["flavour"]): r for r in data["results"]}


def compare(base_path: str, head_path: str) -> str:
    base, head = _index(base_path), _index(head_path)
    lines = [f"{'case':<70} {'base':>7} {'head':>7} {'change':>8}", "-" * 95]
    for key in sorted(set(base) | set(head)):
        b, h = base.get(key, {}).get("ratio"), head.get(key, {}).get("ratio")
        change = f"{(h - b) / b * 100:+7.1f}%" if b and h else f"{'new' if h else 'gone':>8}"
        shown = f"{key[0]}: {key[1]} ({key[2]})"[:70]
        lines.append(f"{shown:<70} {b or 0:7.2f} {h or 0:7.2f} {change:>8}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(sys.argv[1], sys.argv[2]))
