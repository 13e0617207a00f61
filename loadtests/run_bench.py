"""``make bench``: every ``loadtests/bench_*.py``, one table. Args filter modules by name."""

from __future__ import annotations

import sys

from loadtests.harness import main

if __name__ == "__main__":
    sys.exit(main())
