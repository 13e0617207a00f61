"""The namespace every pattern lives under: a mount's prefix, mode, default TTL and codec.

A :class:`Mount` is configuration only (pure, hashable). ``redispatterns.mount.Namespace`` binds
one to a client; patterns accept either as ``mount=``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import validate
from .codec import Codec, default_codec
from .keys import Keyspace

__all__ = ["DEFAULT_PREFIX", "MODES", "Mode", "Mount", "check_prefixes_disjoint"]

Mode = Literal["read", "write", "read-write"]
MODES: tuple[str, ...] = ("read", "write", "read-write")
DEFAULT_PREFIX = "rp:"


@dataclass(frozen=True)
class Mount:
    """A named slice of the keyspace.

    ``mode``: ``"read"`` refuses writes, ``"write"`` refuses reads (``PermissionError``).
    ``prefix``: every key of the mount starts with it; a ``{tag}`` in it puts the whole mount
    in one Cluster slot. ``ttl``: default seconds for records (``None``: no expiry).
    ``schema``, ``max_entries``, ``max_value_size``: used by the kv facade.
    """

    mode: Mode = "read-write"
    prefix: str = DEFAULT_PREFIX
    ttl: float | None = None
    schema: Any = None
    max_entries: int | None = 10000
    max_value_size: int | None = 102400
    codec: Codec = field(default_factory=default_codec, compare=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mount mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if not isinstance(self.prefix, str):
            raise TypeError(f"mount prefix must be a str, not {type(self.prefix).__name__}")
        if not self.prefix:
            raise ValueError("mount prefix cannot be empty: it is what isolates the mount")
        Keyspace(self.prefix)  # validates characters
        if self.ttl is not None:
            _check_positive("ttl", self.ttl)
        for name in ("max_entries", "max_value_size"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{name} must be an int or None")
                if value <= 0:
                    raise ValueError(f"{name} must be positive, got {value}")
        if not isinstance(self.codec, Codec):
            raise TypeError("codec must have encode(value) -> bytes and decode(bytes) methods")

    @property
    def keyspace(self) -> Keyspace:
        return Keyspace(self.prefix)

    @property
    def can_read(self) -> bool:
        return self.mode != "write"

    @property
    def can_write(self) -> bool:
        return self.mode != "read"

    def check_read(self, what: str, name: str = "") -> None:
        if self.mode == "write":
            raise PermissionError(f"{what} reads, but mount {name or self.prefix!r} is write-only")

    def check_write(self, what: str, name: str = "") -> None:
        if self.mode == "read":
            raise PermissionError(f"{what} writes, but mount {name or self.prefix!r} is read-only")

    def ttl_ms(self, override: float | None = None) -> int | None:
        """The TTL in integer milliseconds (``override`` wins), or ``None``."""
        ttl = self.ttl if override is None else override
        if ttl is None:
            return None
        _check_positive("ttl", ttl)
        return max(1, round(ttl * 1000))


def _check_positive(name: str, value: object) -> None:
    validate.seconds(value, name)


def check_prefixes_disjoint(prefixes: Mapping[str, str]) -> None:
    """Raise ``ValueError`` when one mount's prefix is a prefix of another's (shared keys)."""
    items = sorted(prefixes.items(), key=lambda kv: kv[1])
    for (a, pa), (b, pb) in itertools.pairwise(items):
        if pb.startswith(pa):
            raise ValueError(f"mount prefixes overlap: {a!r} ({pa!r}) contains {b!r} ({pb!r})")
