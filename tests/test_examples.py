"""Every script in examples/ runs to completion against a real server (REDIS_URL set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, standalone_url: str) -> None:
    env = dict(os.environ, REDIS_URL=standalone_url)
    proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{path.name} printed nothing"
