"""The API reference builds in strict mode: every page resolves, no broken link or reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    reference = (tmp_path / "api" / "lock.html").read_text()
    assert "LockHandle" in reference and "fenced_set" in reference  # rendered from the docstrings
    assert (tmp_path / "loadtests" / "results" / "http-loadtest.svg").exists()


def test_docs_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\nstrict: true\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "missing.md" in proc.stderr
