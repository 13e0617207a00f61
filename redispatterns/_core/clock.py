"""Server time: the clock every client agrees on (client clocks may be skewed)."""

from __future__ import annotations

from .ops import Flow, Script
from .scripts import load

__all__ = ["server_time_us"]


def server_time_us() -> Flow[int]:
    """Integer microseconds since the epoch, from the server's ``TIME``."""
    return int((yield Script(load("core_time"))))
