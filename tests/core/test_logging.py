"""The package's loggers are silent until the application configures logging."""

from __future__ import annotations

import subprocess
import sys

_SNIPPET = """
import logging, sys
import redispatterns
if sys.argv[1] == "configured":
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
logging.getLogger("redispatterns.lock").warning("lease lost for %s", "job")
"""


def _stderr(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _SNIPPET, mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_unconfigured_logging_prints_nothing() -> None:
    assert _stderr("bare") == ""


def test_configured_logging_shows_the_record() -> None:
    assert "redispatterns.lock lease lost for job" in _stderr("configured")
