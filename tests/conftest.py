"""Test configuration: the public plugin gives backends, flavours and real servers.

Garbage collection: in a worker that has imported every framework the suite covers, a full
collection walked 230k-530k objects and took 0.5-1.1 s on a 2-core VM (measured during a full
run: 43 such pauses over 0.5 s), longer than the slack of a bound like "one timeout". So what
exists once the tests are collected is frozen out of later collections, and a test that times
the library asks for :func:`no_gc_pauses`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest_plugins = ["redispatterns.testing.plugin"]


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()  # imports, test modules: never garbage, no longer walked by each collection


@pytest.fixture
def no_gc_pauses() -> Iterator[None]:
    """No automatic collection during the test (what it leaves is collected after it): its
    timings measure the library, not the interpreter collecting what earlier tests left."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
