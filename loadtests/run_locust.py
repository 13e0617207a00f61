"""``make loadtest``: Locust headless against a private server, bounded in users and time.

Environment: ``LOCUST_USERS`` (default 20), ``LOCUST_TIME`` (default 20s), ``REDIS_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtests.harness import private_server


def main() -> int:
    users = os.environ.get("LOCUST_USERS", "20")
    duration = os.environ.get("LOCUST_TIME", "20s")
    locustfile = Path(__file__).with_name("locustfile.py")
    with private_server() as url:
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
               "-u", users, "-r", users, "-t", duration, "--host", url, "--only-summary",
               *sys.argv[1:]]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=locustfile.parent.parent)


if __name__ == "__main__":
    sys.exit(main())
