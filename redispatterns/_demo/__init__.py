"""The narrated tour behind ``python -m redispatterns demo``.

Each pattern adds a module here with ``ORDER: int``, ``TITLE: str`` and
``tour(url: str, say: Callable[[str], None]) -> None``; the tour runs them in ``ORDER``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

__all__ = ["Say", "sections"]

Say = Callable[[str], None]


def sections() -> list[ModuleType]:
    """The tour's modules, in order."""
    mods = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(
        (m for m in mods if hasattr(m, "tour")), key=lambda m: (getattr(m, "ORDER", 99), m.__name__)
    )
