"""The near tier's bookkeeping: a process-local LRU of encoded values, kept coherent by the
server's invalidation messages (the link that reads them lives in the runner layer).

What it guarantees, given that every invalidation the server sends reaches :meth:`NearStore.drop`
or a gap in the link reaches :meth:`NearStore.flush`:

- **A read in flight loses to an invalidation.** :meth:`begin` registers a key before its read
  is sent; an invalidation of that key (or a flush) while the read is in flight poisons the
  ticket, and :meth:`finish` then stores nothing. An invalidation that arrives after the store
  removes the entry. Either way no value older than the last invalidated write stays.
- **Nothing stale across a gap.** :meth:`flush` empties the tier and bumps the generation, so a
  read that began before the gap cannot store its value after it.
- **Never past the server's TTL.** Each entry carries the deadline the server gave the key
  (``expires_at``, on the caller's monotonic clock); a lookup past it is a miss.
- **Bounded**: by entries and by bytes (the encoded size plus a fixed overhead per entry),
  least recently used first. The bytes are counted as ``len``: a caller hands in a value that
  holds no more memory than its length (see :func:`compact`).

Values are kept encoded (bytes) and decoded on every hit, so what a caller gets is its own copy,
safe to mutate; the price is one decode per hit (about a microsecond for a small JSON document).
The store is shared by threads: every method runs under the lock the runner passes in (the core
never imports ``threading``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass

__all__ = ["ENTRY_OVERHEAD", "NearStats", "NearStore", "Ticket", "compact"]

ENTRY_OVERHEAD = 240
"""Bytes an entry costs beyond the characters of its key and value (the str and bytes objects'
headers, the dict slot and LRU link, the tuple, the float and int): tracemalloc measures 415 B
for a 31-character key and a 140-byte value (``loadtests/bench_near.py``)."""


def compact(raw: bytes) -> bytes:
    """A copy of ``raw`` that holds exactly its length: orjson 3.13 returns bytes that keep a
    4 KiB allocation for a 150-byte value (measured: 4,120 B of RSS each), so a tier of encoder
    output would hold ten times what it counts. Replies read from Redis are already exact."""
    return bytes(memoryview(raw))


@dataclass
class NearStats:
    """Counters of one near tier (``hits`` never touched Redis)."""

    hits: int = 0
    misses: int = 0
    invalidations: int = 0
    flushes: int = 0
    evictions: int = 0
    refused: int = 0  # reads whose value was not stored: invalidated in flight, or too large
    entries: int = 0
    bytes: int = 0


class Ticket:
    """A read in flight for ``key``: stored by :meth:`NearStore.finish` unless poisoned."""

    __slots__ = ("generation", "key", "poisoned")

    def __init__(self, key: str, generation: int) -> None:
        self.key = key
        self.generation = generation
        self.poisoned = False


class NearStore:
    """An LRU of ``key -> (encoded value, expires_at)``, bounded by entries and bytes."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a near tier needs max_entries >= 1 and max_bytes >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = NearStats()
        self.generation = 0
        self._lock: AbstractContextManager[object] = lock or contextlib.nullcontext()
        self._data: OrderedDict[str, tuple[bytes, float, int]] = OrderedDict()
        self._inflight: dict[str, list[Ticket]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float) -> bytes | None:
        """The encoded value, or ``None`` (a miss: absent or past the server's deadline)."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            if now >= item[1]:
                self._remove(key)
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def holds(self, key: str) -> bool:
        """Whether ``key`` is kept (no counter, no LRU move: for tests and benches)."""
        with self._lock:
            return key in self._data

    def begin(self, key: str) -> Ticket:
        """Register a read of ``key`` before it is sent."""
        with self._lock:
            ticket = Ticket(key, self.generation)
            self._inflight.setdefault(key, []).append(ticket)
            return ticket

    def finish(self, ticket: Ticket, raw: bytes | None, expires_at: float) -> bool:
        """End a read: store ``raw`` until ``expires_at`` unless the read was poisoned (an
        invalidation or a flush since :meth:`begin`) or ``raw`` is ``None`` (nothing to keep).
        Returns whether it was stored."""
        with self._lock:
            waiting = self._inflight.get(ticket.key)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(ticket)
                if not waiting:
                    del self._inflight[ticket.key]
            if raw is None:
                return False
            size = len(raw) + len(ticket.key) + ENTRY_OVERHEAD
            if ticket.poisoned or ticket.generation != self.generation or size > self.max_bytes:
                self.stats.refused += 1
                return False
            if ticket.key in self._data:
                self._remove(ticket.key)
            self._data[ticket.key] = (raw, expires_at, size)
            self.stats.entries += 1
            self.stats.bytes += size
            while len(self._data) > self.max_entries or self.stats.bytes > self.max_bytes:
                old = next(iter(self._data))
                self._remove(old)
                self.stats.evictions += 1
            return True

    def drop(self, keys: list[str]) -> None:
        """The server invalidated ``keys``: forget them, and poison reads of them in flight."""
        with self._lock:
            for key in keys:
                self.stats.invalidations += 1
                if key in self._data:
                    self._remove(key)
                for ticket in self._inflight.get(key, ()):
                    ticket.poisoned = True

    def drop_prefix(self, prefix: str) -> None:
        """Forget every key under ``prefix`` and poison reads of them in flight (a local clear)."""
        with self._lock:
            for key in [k for k in self._data if k.startswith(prefix)]:
                self._remove(key)
                self.stats.invalidations += 1
            for key, tickets in self._inflight.items():
                if key.startswith(prefix):
                    for ticket in tickets:
                        ticket.poisoned = True

    def flush(self) -> None:
        """Forget everything (a link gap, ``FLUSHDB``, a ``None`` invalidation): no read that
        began before this call will be stored."""
        with self._lock:
            self.generation += 1
            self._data.clear()
            self.stats.flushes += 1
            self.stats.entries = 0
            self.stats.bytes = 0
            for tickets in self._inflight.values():
                for ticket in tickets:
                    ticket.poisoned = True

    def _remove(self, key: str) -> None:
        _raw, _exp, size = self._data.pop(key)
        self.stats.entries -= 1
        self.stats.bytes -= size
