"""Key-value stores with identity (seed S1): pure flows, content types and the key layout.

A store is four keys sharing the store id's hash tag, so every script touches one slot:

* ``<prefix>kvs:{<id>}:items``   hash, record key -> a type mark + the payload (bytes, UTF-8
  text or JSON): ``j`` JSON, ``t`` UTF-8 text, ``b`` bytes, or ``c<content type>\n`` for a
  declared type, so ``get_value`` is one HGET with nothing else to look up
* ``<prefix>kvs:{<id>}:records`` hash, record key -> ``"<size>:<content type>"``
* ``<prefix>kvs:{<id>}:index``   zset, every record key at score 0 (ordered pages by key)
* ``<prefix>kvs:{<id>}:meta``    hash, the store's metadata: id, name, alias, created/modified/
  accessed times (server TIME, microseconds), item count and total payload size

``items`` and ``records`` also hold a pad entry over 64 bytes under the empty name (no record key
is empty), written with a new record, which keeps them in the hashtable encoding (a listpack is
scanned on every HGET and HSET).

Rules of this module:

1. *Identity.* A named store's id is derived from its name (``n`` + 24 hex digits of
   SHA-256), an aliased store's from its alias (``a`` + ...), so opening by name needs no
   name -> id registry in another slot: ``store_open`` creates the metadata iff absent, in one
   script, and any number of concurrent openers of one name get one store.
2. *Metadata moves with the data.* Every write (``store_set``, ``store_delete``,
   ``store_purge``) checks that the store exists and updates item count, size and times in the
   same script. A write to a dropped store changes nothing and raises :class:`StoreNotFound`.
3. *Reads stay reads.* ``get_record``, ``record_exists`` and key pages never write, so they run
   on replicas and never dirty the AOF; ``accessed_at`` is the time of the last open or write.
4. *Content types round-trip.* ``bytes`` -> ``application/octet-stream``, ``str`` ->
   ``text/plain; charset=utf-8``, anything else -> ``application/json; charset=utf-8``
   (orjson). A declared type is stored as given and decides decoding: ``*json*`` -> the JSON
   value, ``text/*`` or a ``charset=`` -> ``str``, anything else -> ``bytes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from ..errors import DecodeError, StoreNotFound
from .codec import as_bytes, as_str
from .keys import Keyspace, check_same_slot
from .ops import Command, Flow, KeyT, Script, trusted_script
from .scripts import load

__all__ = [
    "JSON",
    "KeyPager",
    "OCTETS",
    "TEXT",
    "KeyValueStoreRecord",
    "KeyValueStoreRecordMetadata",
    "StoreKeys",
    "KeyValueStoreMetadata",
    "decode",
    "delete_value",
    "drop",
    "encode",
    "find_store",
    "get_metadata",
    "get_record",
    "identity",
    "keys_page",
    "open_store",
    "purge",
    "record_exists",
    "set_value",
    "stored",
    "unpack",
]

JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
KIND = "kvs"
MAX_ID = 256
DEFAULT_ALIAS = "default"


@dataclass(frozen=True, slots=True)
class KeyValueStoreMetadata:
    """A store's metadata, as kept by every write. Times are UTC, from the server's clock."""

    id: str
    name: str | None
    alias: str | None
    created_at: datetime
    modified_at: datetime
    accessed_at: datetime
    item_count: int
    size: int


@dataclass(frozen=True, slots=True)
class KeyValueStoreRecordMetadata:
    """One record's key, content type and payload size in bytes."""

    key: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class KeyValueStoreRecord:
    """One record: its key, decoded value, content type and payload size in bytes."""

    key: str
    value: Any
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The four keys of one store (one hash tag: the id)."""

    items: str
    records: str
    index: str
    meta: str
    wire: tuple[KeyT, ...] = field(init=False, repr=False, compare=False)
    """The four keys as the scripts take them: checked for one slot once, here, and as bytes when
    ASCII (the same bytes whatever the client's encoding, not converted again on every call)."""

    def __post_init__(self) -> None:
        keys = self.all
        check_same_slot(keys)
        object.__setattr__(self, "wire", tuple(k.encode() if k.isascii() else k for k in keys))

    def script(self, name: str, *args: Any) -> Script:
        """Script ``name`` on the four keys, built without checking their slot again."""
        return trusted_script(load(name), self.wire, args)

    @classmethod
    def of(cls, keyspace: Keyspace, store_id: str) -> StoreKeys:
        items, records, index, meta = keyspace.family(KIND, store_id, ("items", "records", "index", "meta"))
        return cls(items, records, index, meta)

    @property
    def all(self) -> tuple[str, str, str, str]:
        return (self.items, self.records, self.index, self.meta)


# --------------------------------------------------------------------------- identity


def _digest(kind: str, text: str) -> str:
    return kind + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a store {what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"a store {what} cannot be empty")
    if len(value) > MAX_ID:
        raise ValueError(f"a store {what} is at most {MAX_ID} characters, got {len(value)}")
    return value


def identity(id: str | None, name: str | None, alias: str | None) -> tuple[str, str, str]:
    """``(id, name, alias)`` of the store to open (``""`` for no name / alias).

    At most one of the three may be given; none opens the default unnamed store (alias
    ``"default"``). A name or alias determines the id, so the same name is the same store.
    """
    given = [w for w, v in (("id=", id), ("name=", name), ("alias=", alias)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"open a store by one of id=, name= or alias=, not {' and '.join(given)}")
    if id is not None:
        return _check_name("id", id), "", ""
    if name is not None:
        return _digest("n", _check_name("name", name)), name, ""
    alias = DEFAULT_ALIAS if alias is None else _check_name("alias", alias)
    return _digest("a", alias), "", alias


# --------------------------------------------------------------------------- content types


def _is_json(content_type: str) -> bool:
    return "json" in content_type.lower()


def _is_text(content_type: str) -> bool:
    ct = content_type.lower()
    return ct.startswith("text/") or "charset=" in ct


def check_content_type(content_type: object) -> str | None:
    """Validate a declared content type (``None``: detect it from the value)."""
    if content_type is None:
        return None
    if not isinstance(content_type, str):
        raise TypeError(f"content_type must be a str such as 'image/png', not {type(content_type).__name__}")
    if not content_type or len(content_type) > 255 or any(c in content_type for c in "\r\n\0"):
        raise ValueError(f"content_type must be a MIME type such as 'image/png', got {content_type!r}")
    return content_type


def encode(value: Any, content_type: str | None) -> tuple[bytes, str]:
    """The payload and content type stored for ``value`` (see rule 4)."""
    content_type = check_content_type(content_type)
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload = bytes(value)
        if content_type is None:
            return payload, OCTETS
        if _is_json(content_type):
            try:
                orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"bytes declared as {content_type!r} are not valid JSON: {exc}") from None
        return payload, content_type
    if content_type is None:
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass"), TEXT
        content_type = JSON
    if _is_json(content_type):
        try:
            return orjson.dumps(value), content_type
        except orjson.JSONEncodeError as exc:
            raise TypeError(
                f"cannot store a {type(value).__name__} as JSON ({exc}); pass JSON types, "
                "dataclasses, datetime, UUID, str or bytes"
            ) from None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass"), content_type
    raise TypeError(
        f"a value stored as {content_type!r} must be str or bytes, not {type(value).__name__}; "
        "encode it yourself or omit content_type to store it as JSON"
    )


def decode(payload: bytes | str, content_type: str) -> Any:
    """The value of a stored payload of ``content_type`` (the inverse of :func:`encode`)."""
    raw = as_bytes(payload)
    if _is_json(content_type):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"stored {content_type!r} payload is not valid JSON: {exc}") from None
    if _is_text(content_type):
        return raw.decode("utf-8", "surrogateescape")
    return raw


_MARKS = {JSON: b"j", TEXT: b"t", OCTETS: b"b"}
_TYPES = {ord(m): ct for ct, m in _MARKS.items()}


def stored(payload: bytes, content_type: str) -> bytes:
    """What the items hash holds: the type mark, then the payload."""
    mark = _MARKS.get(content_type)
    if mark is None:
        return b"c" + content_type.encode("utf-8") + b"\n" + payload
    return mark + payload


def unpack(data: bytes | str) -> tuple[bytes, str]:
    """``(payload, content type)`` of an items hash value (the inverse of :func:`stored`)."""
    raw = as_bytes(data)
    content_type = _TYPES.get(raw[0]) if raw else None
    if content_type is not None:
        return raw[1:], content_type
    if raw[:1] == b"c":
        ct, sep, payload = raw[1:].partition(b"\n")
        if sep:
            return payload, ct.decode("utf-8", "replace")
    raise DecodeError("stored record has no content type mark: it was not written by KeyValueStore")


def _record_meta(key: str, raw: bytes | str | None) -> KeyValueStoreRecordMetadata:
    text = as_str(raw) if raw else ""
    size, _, ct = text.partition(":")
    return KeyValueStoreRecordMetadata(key, ct or OCTETS, int(size) if size.isdigit() else 0)


# --------------------------------------------------------------------------- metadata


def _time(us: bytes | str | None) -> datetime:
    return datetime.fromtimestamp(int(as_str(us or "0")) / 1_000_000, tz=timezone.utc)


def parse_metadata(flat: Sequence[Any]) -> KeyValueStoreMetadata:
    """A metadata hash (HGETALL's flat list or dict reply) as :class:`KeyValueStoreMetadata`."""
    if isinstance(flat, dict):
        d = {as_str(k): as_str(v) for k, v in flat.items()}
    else:
        d = {as_str(flat[i]): as_str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    return KeyValueStoreMetadata(
        id=d.get("id", ""),
        name=d.get("name") or None,
        alias=d.get("alias") or None,
        created_at=_time(d.get("created_at")),
        modified_at=_time(d.get("modified_at")),
        accessed_at=_time(d.get("accessed_at")),
        item_count=int(d.get("item_count") or 0),
        size=int(d.get("size") or 0),
    )


# --------------------------------------------------------------------------- flows


def open_store(
    keys: StoreKeys, store_id: str, name: str, alias: str
) -> Flow[tuple[bool, KeyValueStoreMetadata]]:
    """Open the store, creating it when absent: ``(created, metadata)``. One round trip."""
    created, flat = yield Script(load("store_open"), keys=(keys.meta,), args=(store_id, name, alias))
    return bool(created), parse_metadata(flat)


def find_store(keys: StoreKeys, store_id: str) -> Flow[tuple[bool, KeyValueStoreMetadata]]:
    """Open an existing store without writing (a read mount): ``(False, metadata)``."""
    meta = yield from get_metadata(keys, store_id)
    return False, meta


def get_metadata(keys: StoreKeys, store_id: str) -> Flow[KeyValueStoreMetadata]:
    """The store's metadata; :class:`StoreNotFound` when it was dropped (or never opened)."""
    flat = yield Command("HGETALL", keys.meta)
    if not flat:
        raise StoreNotFound(store_id)
    return parse_metadata(flat)


def get_record(keys: StoreKeys, key: str) -> Flow[KeyValueStoreRecord | None]:
    """The record with its decoded value and content type, or ``None``: one HGET."""
    data = yield Command("HGET", keys.items, key)
    if data is None:
        return None
    payload, content_type = unpack(data)
    return KeyValueStoreRecord(key, decode(payload, content_type), content_type, len(payload))


def record_exists(keys: StoreKeys, key: str) -> Flow[bool]:
    """True when the store holds ``key``: one HEXISTS."""
    found = yield Command("HEXISTS", keys.items, key)
    return bool(found)


def set_value(keys: StoreKeys, store_id: str, key: str, payload: bytes, content_type: str) -> Flow[bool]:
    """Write one record and the store's metadata in one script: True when it was new."""
    data = stored(payload, content_type)
    code = yield keys.script("store_set", key, data, content_type, len(payload))
    if code == -1:
        raise StoreNotFound(store_id)
    return bool(code)


def delete_value(keys: StoreKeys, store_id: str, key: str) -> Flow[bool]:
    """Delete one record and update the metadata in one script: True when it existed."""
    code = yield keys.script("store_delete", key)
    if code == -1:
        raise StoreNotFound(store_id)
    return bool(code)


def keys_page(keys: StoreKeys, after: str | None, count: int) -> Flow[list[KeyValueStoreRecordMetadata]]:
    """Up to ``count`` records' metadata in key order, strictly after ``after``."""
    flat = yield Script(
        load("store_keys"),
        keys=(keys.index, keys.records),
        args=(after or "", count, 0 if after is None else 1),
    )
    return [_record_meta(as_str(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]


class KeyPager:
    """The paging state of one ``iterate_keys``: which page to ask for next, and when to stop.

    ``flow()`` is the next page's flow, or ``None`` when done; ``took(page)`` records a reply.
    """

    __slots__ = ("_after", "_done", "_keys", "_left", "_size")

    def __init__(self, keys: StoreKeys, after: str | None, limit: int | None, page_size: int) -> None:
        self._keys, self._after, self._left, self._size = keys, after, limit, page_size
        self._done = limit == 0

    def flow(self) -> Flow[list[KeyValueStoreRecordMetadata]] | None:
        if self._done:
            return None
        count = self._size if self._left is None else min(self._left, self._size)
        return keys_page(self._keys, self._after, count)

    def took(self, page: list[KeyValueStoreRecordMetadata]) -> list[KeyValueStoreRecordMetadata]:
        if self._left is not None:
            self._left -= len(page)
        self._done = len(page) < self._size or self._left == 0
        if page:
            self._after = page[-1].key
        return page


def purge(keys: StoreKeys, store_id: str) -> Flow[int]:
    """Remove every record, keep the store: the number removed."""
    n = yield keys.script("store_purge")
    if n == -1:
        raise StoreNotFound(store_id)
    return int(n)


def drop(keys: StoreKeys) -> Flow[bool]:
    """Remove the store and its metadata: True when it existed."""
    existed = yield keys.script("store_drop")
    return bool(existed)
