"""Key building: prefixes, hash tags, glob escaping for SCAN MATCH, and slot checks.

Conventions (DESIGN §4):

* every key starts with its namespace's prefix, used verbatim (``"app:"``);
* a pattern's keys are ``<prefix><kind>:<name>``; keys that one operation touches together share
  the subject's hash tag: ``<prefix><kind>:{<subject>}:<suffix>``;
* a subject holding ``{`` or ``}``, or starting with ``#``, is tagged by its SHA-256 digest
  (``{#3f2a...}``), so braces in user data can neither split one subject across slots nor collide
  with another subject: a literal ``#...`` is digested too, so it can never spell a digest form;
* a prefix may itself carry a hash tag (``"{app}:"``), which then puts the whole namespace in one
  slot: exact quotas and ``clear`` on Cluster, at the cost of that slot's node carrying it all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.crc import key_slot

from ..errors import CrossSlotError

__all__ = ["Keyspace", "check_same_slot", "glob_escape", "hash_tag", "slot"]

_GLOB_SPECIAL = frozenset("*?[]\\")


def _b(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def slot(key: str | bytes) -> int:
    """The Cluster hash slot of ``key`` (honours ``{hash tags}``)."""
    return int(key_slot(_b(key)))


def hash_tag(key: str | bytes) -> bytes | None:
    """The hash tag Redis would use for ``key``, or ``None`` when the whole key is hashed."""
    k = _b(key)
    start = k.find(b"{")
    if start < 0:
        return None
    end = k.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return k[start + 1 : end]


def check_same_slot(keys: Iterable[str | bytes]) -> int:
    """Return the one slot of ``keys``; raise :class:`CrossSlotError` if they span several."""
    ks = list(keys)
    slots = [slot(k) for k in ks]
    if len(set(slots)) > 1:
        raise CrossSlotError(ks, slots)
    return slots[0] if slots else 0


def glob_escape(text: str) -> str:
    """Escape ``* ? [ ] \\`` so ``text`` matches only itself in SCAN MATCH / PSUBSCRIBE."""
    if not any(c in _GLOB_SPECIAL for c in text):
        return text
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _check_part(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Builds the keys of one namespace. Pure: it never talks to Redis."""

    prefix: str = "rp:"

    def __post_init__(self) -> None:
        _check_part("prefix", self.prefix)
        if "\n" in self.prefix or "\r" in self.prefix:
            raise ValueError("a key prefix cannot contain newlines")
        open_at = self.prefix.find("{")
        if open_at >= 0 and self.prefix.find("}", open_at + 1) <= open_at + 1:
            raise ValueError(
                f"prefix {self.prefix!r} opens a hash tag it does not close; write e.g. '{{app}}:'"
            )

    def key(self, *parts: str) -> str:
        """``<prefix>a:b:c`` for ``key("a", "b", "c")``."""
        for p in parts:
            _check_part("key part", p)
        return self.prefix + ":".join(parts)

    def tagged(self, kind: str, subject: str, *suffix: str) -> str:
        """``<prefix><kind>:{<subject>}[:suffix...]``: every key of one subject in one slot."""
        _check_part("kind", kind)
        _check_part("name", subject)
        if not subject:
            raise ValueError(f"{kind} name cannot be empty")
        for p in suffix:
            _check_part("key part", p)
        tail = (":" + ":".join(suffix)) if suffix else ""
        # braces would cut the tag short, and a literal "#..." could forge a digest form: tag a digest
        if "{" in subject or "}" in subject or subject[0] == "#":
            subject = "#" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self.prefix}{kind}:{{{subject}}}{tail}"

    def family(self, kind: str, subject: str, suffixes: Sequence[str]) -> tuple[str, ...]:
        """Several keys of one subject, guaranteed (and checked) to share a slot."""
        keys = tuple(self.tagged(kind, subject, *(s.split(":") if s else ())) for s in suffixes)
        check_same_slot(keys)
        return keys

    def match(self, *parts: str) -> str:
        """A SCAN MATCH pattern for every key under ``<prefix><parts...>``, glob-escaped."""
        return glob_escape(self.key(*parts)) + "*"

    def contains(self, key: str | bytes) -> bool:
        """True when ``key`` lies under this prefix."""
        k = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        return k.startswith(self.prefix)

    def strip(self, key: str | bytes) -> str:
        """The part of ``key`` after the prefix (``ValueError`` when it lies outside)."""
        k = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        if not k.startswith(self.prefix):
            raise ValueError(f"key {k!r} is outside prefix {self.prefix!r}")
        return k[len(self.prefix) :]

    def child(self, *parts: str) -> Keyspace:
        """A nested keyspace: ``Keyspace("app:").child("cache")`` has prefix ``app:cache:``."""
        return Keyspace(self.key(*parts) + ":")
