"""compose.yaml exposes nothing beyond this machine and needs no host networking (Docker Desktop)."""

from __future__ import annotations

import re
from pathlib import Path

COMPOSE = (Path(__file__).resolve().parent.parent / "compose.yaml").read_text()


def test_every_published_port_is_on_loopback() -> None:
    published = re.findall(r"ports:\s*\[([^\]]*)\]", COMPOSE)
    assert published, "compose.yaml publishes no port"
    for group in published:
        for entry in re.findall(r'"([^"]+)"', group):
            assert entry.startswith("127.0.0.1:"), f"{entry} listens on every interface"


def test_no_host_networking() -> None:
    assert "network_mode" not in COMPOSE
    assert "--cluster-announce-ip 127.0.0.1" in COMPOSE
