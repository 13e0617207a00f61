"""What server is on the other end, and what it can do: pure parsing of ``INFO server``.

Valkey reports ``redis_version:7.2.4`` whatever its own version, so the kind comes from
``server_name`` / ``valkey_version`` and each capability is decided per kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServerInfo", "parse_info", "parse_version"]


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in ([*text.split("."), "0", "0"])[:3]]
    return parts[0], parts[1], parts[2]


# capability -> minimum version per server kind (None: never)
_CAPS: dict[str, dict[str, tuple[int, int, int] | None]] = {
    "sharded_pubsub": {"redis": (7, 0, 0), "valkey": (7, 0, 0)},
    "xautoclaim_deleted": {"redis": (7, 0, 0), "valkey": (7, 0, 0)},
    "zrank_withscore": {"redis": (7, 2, 0), "valkey": (7, 2, 0)},
    "set_get_option": {"redis": (6, 2, 0), "valkey": (7, 0, 0)},
    "hash_field_ttl": {"redis": (7, 4, 0), "valkey": (9, 0, 0)},
    "xadd_idmp": {"redis": (8, 6, 0), "valkey": None},
    "xreadgroup_claim": {"redis": (8, 4, 0), "valkey": None},
}


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Kind (``"redis"``/``"valkey"``/``"fakeredis"``), version, mode and capabilities."""

    kind: str
    version: tuple[int, int, int]
    mode: str = "standalone"
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def __str__(self) -> str:
        return f"{self.kind} {self.version_text} ({self.mode})"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def parse_info(info: Mapping[str, Any] | str | bytes) -> ServerInfo:
    """Build :class:`ServerInfo` from ``INFO server`` (a dict as redis-py parses it, or raw text)."""
    if isinstance(info, (str, bytes)):
        fields: dict[str, str] = {}
        for line in _s(info).splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
    else:
        fields = {_s(k): _s(v) for k, v in info.items()}
    if fields.get("server_name") == "valkey" or "valkey_version" in fields:
        kind, version = "valkey", parse_version(fields.get("valkey_version", "0"))
    else:
        kind, version = "redis", parse_version(fields.get("redis_version", "0"))
    mode = fields.get("redis_mode", "standalone")
    caps = {name for name, mins in _CAPS.items() if (need := mins.get(kind)) is not None and version >= need}
    return ServerInfo(kind=kind, version=version, mode=mode, capabilities=frozenset(caps))
