"""KV reads through a near tier (pure): the local lookup and the read that fills it.

A record is kept locally under its Redis key (``<base>k:<key>``), encoded, with the deadline the
server gave it: the read sends ``GET`` and ``PTTL`` in one round trip and the entry expires at
the caller's clock reading taken *before* the read was sent plus the PTTL, so it never outlives
the record. A key Redis does not hold is kept too (as :data:`ABSENT`, with no deadline): a write
anywhere sends an invalidation that drops it, like any other entry. Coherence with writes is the
:class:`~redispatterns._core.near.NearStore` ticket protocol (a read overtaken by an invalidation
or a flush is not kept).
"""

from __future__ import annotations

from typing import Any

from .codec import as_bytes
from .kv import MountSpec
from .near import NearStore
from .ops import Batch, Command, Flow

__all__ = ["ABSENT", "lookup", "read"]

ABSENT = b"\x00rp:kv:absent"
"""The local entry of a key Redis does not hold (told apart by identity, never by value)."""

_FOREVER = float("inf")


def lookup(near: NearStore, spec: MountSpec, key: str, now: float) -> tuple[bool, Any] | None:
    """``(found, value)`` from the local tier (the schema default when Redis holds no value),
    or ``None``: not held locally."""
    raw = near.get(spec.record(key), now)
    if raw is None:
        return None
    if raw is ABSENT:
        return False, spec.default(key)
    return True, spec.decode(raw)


def read(near: NearStore, spec: MountSpec, key: str, sent_at: float) -> Flow[tuple[bool, Any]]:
    """Read ``key`` from Redis and keep it locally unless an invalidation overtook the read;
    ``sent_at`` is the caller's monotonic clock read before this flow started."""
    record = spec.record(key)
    ticket = near.begin(record)
    done = False
    try:
        raw, pttl = yield Batch((Command("GET", record), Command("PTTL", record)))
        ttl_ms = int(pttl)
        if raw is None:
            out: tuple[bool, Any] = (False, spec.default(key))
            keep, until = (ABSENT, _FOREVER) if ttl_ms == -2 else (None, 0.0)
        else:
            data = as_bytes(raw)
            out = (True, spec.decode(data))
            keep = data if ttl_ms != -2 else None  # expired between the two commands: not kept
            until = _FOREVER if ttl_ms == -1 else sent_at + ttl_ms / 1000
        near.finish(ticket, keep, until)
        done = True
        return out
    finally:
        if not done:
            near.finish(ticket, None, 0.0)
