"""The kv mount facade: configuration, schemas, key layout, flows and the write buffer (pure).

Layout of one mount (``B`` is its *base*, all in one Cluster slot):

* a prefix with a hash tag (``"{app}:user:"``) gives ``B = prefix + "kv:"``;
* a prefix without one (``"app:user:"``) gives ``B = prefix + "{<store tag>}:"`` (tag ``kv`` by
  default), so every untagged mount of a store shares one slot.

Under ``B``: ``k:<key>`` the records (the user's key verbatim after ``k:``), ``i`` the index (a
lexicographic ZSET of key names), ``m`` the metadata HASH (``size;ttl_ms;content_type`` for a
record with a TTL, else ``size:updated_ms:content_type``; see :func:`meta_tail`), ``x`` the expiry
ZSET (deadline in ms) and ``u`` the mount's byte counter. ``m`` and ``x`` hold one pad entry over
64 bytes each (``m``'s under the empty name, which no key has; ``x``'s at deadline ``+inf``),
written with a new key, so that they keep their hashed encodings however few records the mount
holds (a listpack is scanned on every write). Every write goes through one script that updates
the record and the bookkeeping together, so the quotas are tracked, never scanned. The
store-wide size limit is exact across the mounts that share the writer's slot; mounts in other
slots are counted from a snapshot read just before the write (best effort).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import ResponseError

from ..errors import MergeConflict, QuotaExceeded, SchemaError, SchemaTypeError
from .bulk import decode_values, texts
from .codec import BYTES_MARK, JsonCodec, as_bytes, as_str
from .keys import hash_tag, slot
from .mount import Mount, check_prefixes_disjoint
from .ops import Batch, Command, Flow, KeyT, Script, Sleep, trusted_script
from .scripts import LuaScript, load

__all__ = [
    "KINDS",
    "MERGE_RETRIES",
    "Field",
    "KVInfo",
    "KVStore",
    "MergeConflict",
    "MountSpec",
    "Pending",
    "SchemaTypeError",
    "WriteBuffer",
    "WritePolicy",
    "parse_schema",
]

WritePolicy = Literal["immediate", "dispose"]
WRITE_POLICIES = ("immediate", "dispose")
KINDS = ("string", "number", "bool", "list", "dict", "any")
MERGE_RETRIES = 64
PAGE = 500  # key names per script call when listing / clearing, keys per MGET
SORT_PAGE = 10_000  # records per SORT ... GET in get_all: past that, the rest pages by key name


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class Field:
    """One schema field: its key, kind (string/number/bool/list/dict/any), default, nullability."""

    key: str
    type: str
    default: Any = None
    nullable: bool = False

    def check(self, value: Any) -> None:
        if value is None and (self.nullable or self.type == "any"):
            return
        if not _is_kind(self.type, value):
            raise SchemaTypeError(
                f"field {self.key!r} is a {self.type}, got {type(value).__name__} ({value!r:.40})"
            )

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "default": copy.deepcopy(self.default)}


def _is_kind(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, (list, tuple))
    return isinstance(value, dict)


_PY_KINDS: tuple[tuple[Any, str], ...] = (
    (bool, "bool"),
    (str, "string"),
    (int, "number"),
    (float, "number"),
    (list, "list"),
    (tuple, "list"),
    (dict, "dict"),
)


def _kind_of(annotation: Any) -> tuple[str, bool]:
    """The kind of a type annotation, and whether it admits ``None``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return _kind_of(args[0])[0], nullable
        return "any", nullable
    base = origin or annotation
    for py, kind in _PY_KINDS:
        if base is py:
            return kind, False
    if base is typing.Any:
        return "any", True
    return "any", False


def parse_schema(schema: Any) -> dict[str, Field] | None:
    """Turn a schema into fields: ``{key: "string"}``, ``{key: {"type":..., "default":...}}``,
    a dataclass, a TypedDict or a pydantic model. ``None`` means an open mount."""
    if schema is None:
        return None
    if isinstance(schema, Mapping):
        return _from_mapping(schema)
    if dataclasses.is_dataclass(schema) and isinstance(schema, type):
        hints = typing.get_type_hints(schema)
        out: dict[str, Field] = {}
        for f in dataclasses.fields(schema):
            kind, nullable = _kind_of(hints.get(f.name, Any))
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            out[f.name] = Field(f.name, kind, default, nullable)
        return out
    model_fields = getattr(schema, "model_fields", None)
    if isinstance(schema, type) and isinstance(model_fields, dict):  # pydantic v2
        out = {}
        for name, info in model_fields.items():
            kind, nullable = _kind_of(info.annotation)
            default = info.get_default(call_default_factory=True)
            if type(default).__name__ == "PydanticUndefinedType":
                default = None
            out[name] = Field(name, kind, default, nullable)
        return out
    if isinstance(schema, type) and issubclass(schema, dict) and hasattr(schema, "__annotations__"):
        hints = typing.get_type_hints(schema)  # TypedDict
        return {k: Field(k, *_kind_of(v)[:1], None, True) for k, v in hints.items()}
    raise TypeError(
        "schema must be a dict {key: type or {'type', 'default'}}, a dataclass, a TypedDict "
        f"or a pydantic model, not {schema!r}"
    )


def _from_mapping(schema: Mapping[str, Any]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for key, spec in schema.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"schema keys must be non-empty strings, got {key!r}")
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, Mapping):
            raise TypeError(f"schema field {key!r} must be a type name or a dict, got {spec!r}")
        unknown = set(spec) - {"type", "default", "nullable"}
        if unknown:
            raise ValueError(f"schema field {key!r} has unknown options {sorted(unknown)}")
        kind = spec.get("type", "any")
        if kind not in KINDS:
            raise ValueError(f"schema field {key!r}: type must be one of {', '.join(KINDS)}")
        f = Field(key, kind, spec.get("default"), bool(spec.get("nullable", False)))
        if f.default is not None:
            f.check(f.default)
        out[key] = f
    return out


# --------------------------------------------------------------------------- mounts


@dataclass(frozen=True, slots=True)
class KVInfo:
    """Metadata of one record: encoded size in bytes, content type, last write, remaining TTL."""

    key: str
    size: int
    content_type: str
    updated_at: float
    ttl: float | None


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    index: str
    meta: str
    expiry: str
    used: str

    def keys(self) -> tuple[str, str, str, str]:
        return (self.index, self.meta, self.expiry, self.used)


def mount_base(prefix: str, tag: str) -> str:
    """Where a mount's kv keys start (see the module docstring)."""
    if hash_tag(prefix) is not None:
        return prefix + "kv:"
    if "{" in prefix:
        raise ValueError(
            f"prefix {prefix!r} has a '{{' that does not form a hash tag: use a whole tag "
            "like '{app}:user:' or no braces"
        )
    return f"{prefix}{{{tag}}}:"


@dataclass(frozen=True)
class MountSpec:
    """One configured mount: its name, :class:`Mount`, schema fields and key layout."""

    name: str
    mount: Mount
    base: str
    fields: dict[str, Field] | None
    book: Bookkeeping = field(init=False)
    slot: int = field(init=False)
    sort_pattern: str | None = field(init=False)
    ttl_ms: int | None = field(init=False)
    """The mount's default TTL in ms (checked once, here)."""
    sort_op: Command | None = field(init=False)
    """``get_all``'s one command (ops are immutable values: built once)."""
    json: bool = field(init=False)
    """The codec is exactly :class:`JsonCodec` (bytes out, content type from the first byte)."""
    ctype: str = field(init=False)
    """The content type of another codec's values."""

    def __post_init__(self) -> None:
        b = self.base
        object.__setattr__(self, "book", Bookkeeping(b + "i", b + "m", b + "x", b + "u"))
        object.__setattr__(self, "slot", slot(b + "i"))
        # SORT ... GET substitutes the first '*' of its pattern: only a base without one can
        object.__setattr__(self, "sort_pattern", None if "*" in b else b + "k:*")
        object.__setattr__(self, "ttl_ms", self.mount.ttl_ms())
        index, pattern = self.book.index, self.sort_pattern
        sort_op = None
        if pattern is not None:
            sort_op = Command(
                "SORT_RO", index, "BY", "nosort", "LIMIT", 0, SORT_PAGE, "GET", "#", "GET", pattern,
                keys=(index,), retryable=True,
            )  # fmt: skip
        object.__setattr__(self, "sort_op", sort_op)
        codec = self.mount.codec
        object.__setattr__(self, "json", type(codec) is JsonCodec)
        ctype = (
            "application/json"
            if isinstance(codec, JsonCodec)
            else "application/x-" + type(codec).__name__.lower()
        )
        object.__setattr__(self, "ctype", ctype)

    def write_ttl_ms(self, override: float | None) -> int | None:
        """A write's TTL in ms: ``override`` seconds (checked), else the mount's."""
        return self.ttl_ms if override is None else self.mount.ttl_ms(override)

    def record(self, key: str) -> str:
        return self.base + "k:" + key

    def check_key(self, key: object) -> str:
        if not isinstance(key, str):
            raise TypeError(f"kv keys are str, not {type(key).__name__}")
        if not key:
            raise ValueError("kv keys cannot be empty")
        if self.fields is not None and key not in self.fields:
            raise SchemaError(
                f"mount {self.name!r} has a schema without key {key!r}; "
                f"its keys are {', '.join(sorted(self.fields))}"
            )
        return key

    def default(self, key: str) -> Any:
        if self.fields is None:
            return None
        return copy.deepcopy(self.fields[key].default)

    def encode(self, key: str, value: Any) -> tuple[bytes, str]:
        """Schema-check and encode ``value``; the encoded bytes and the content type."""
        if self.fields is not None:
            self.fields[key].check(value)
        codec = self.mount.codec
        if self.json:  # bytes already
            data = codec.encode(value)
            ctype = "application/octet-stream" if data[:1] == BYTES_MARK else "application/json"
        else:
            data = as_bytes(codec.encode(value))
            ctype = self.ctype
            if data[:1] == BYTES_MARK and isinstance(codec, JsonCodec):
                ctype = "application/octet-stream"
        limit = self.mount.max_value_size
        if limit is not None and len(data) > limit:
            raise QuotaExceeded(
                f"value of {key!r} is {len(data)} bytes encoded; mount {self.name!r} allows "
                f"{limit} (max_value_size); nothing was written",
                quota="max_value_size",
                limit=limit,
                mount=self.name,
            )
        return data, ctype

    def decode(self, raw: Any) -> Any:
        return self.mount.codec.decode(as_bytes(raw))


class KVStore:
    """A validated set of mounts with the store-wide limit and write policy (configuration)."""

    def __init__(
        self,
        mounts: Mapping[str, Mount],
        *,
        max_store_size: int | None = 10485760,
        write_policy: str = "immediate",
        tag: str = "kv",
    ) -> None:
        if not isinstance(mounts, Mapping) or not mounts:
            raise ValueError("KV needs mounts={name: Mount(...)} with at least one mount")
        if write_policy not in WRITE_POLICIES:
            raise ValueError(f"write_policy must be 'immediate' or 'dispose', got {write_policy!r}")
        if max_store_size is not None and (
            isinstance(max_store_size, bool) or not isinstance(max_store_size, int) or max_store_size <= 0
        ):
            raise ValueError(f"max_store_size must be a positive int or None, got {max_store_size!r}")
        if not isinstance(tag, str) or not tag or any(c in tag for c in "{}\r\n"):
            raise ValueError(f"tag must be a non-empty string without braces, got {tag!r}")
        specs: dict[str, MountSpec] = {}
        for name, m in mounts.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"mount names are non-empty strings, got {name!r}")
            if not isinstance(m, Mount):
                raise TypeError(f"mount {name!r} must be a redispatterns.Mount, not {type(m).__name__}")
            specs[name] = MountSpec(name, m, mount_base(m.prefix, tag), parse_schema(m.schema))
        check_prefixes_disjoint({n: m.prefix for n, m in mounts.items()})
        self.specs = specs
        self.sort_refused: set[str] = set()  # mounts whose get_all SORT was refused (see get_all)
        self._write_keys: dict[str, tuple[KeyT, ...]] = {}
        slots = {s.slot for s in specs.values()}
        self._one_slot = slots if len(slots) == 1 else set()  # every mount in one slot
        self.one_slot = len(slots) == 1
        self._terms: dict[tuple[str, int, str], tuple[bytes, bytes, bytes]] = {}
        self._heads: dict[tuple[int, int, str], bytes] = {}
        self._flush_keys: dict[tuple[str, ...], tuple[KeyT, ...]] = {}
        self.max_store_size = max_store_size
        self.write_policy: WritePolicy = "dispose" if write_policy == "dispose" else "immediate"
        self.tag = tag

    def spec(self, name: object) -> MountSpec:
        if not isinstance(name, str):
            raise TypeError(f"mount names are str, not {type(name).__name__}")
        try:
            return self.specs[name]
        except KeyError:
            raise KeyError(f"no mount {name!r}; mounts are {', '.join(self.specs)}") from None

    def peers(self, spec: MountSpec) -> tuple[list[MountSpec], list[MountSpec]]:
        """Other mounts in ``spec``'s slot (counted exactly) and in other slots (snapshot)."""
        same = [s for s in self.specs.values() if s is not spec and s.slot == spec.slot]
        other = [s for s in self.specs.values() if s.slot != spec.slot]
        return same, other

    def elsewhere(self, spec: MountSpec) -> bool:
        """True when a write to ``spec`` reads the usage of mounts in other slots first."""
        return self.max_store_size is not None and spec.slot not in self._one_slot

    def write_keys(self, spec: MountSpec) -> tuple[KeyT, ...]:
        """The bookkeeping keys a write to ``spec`` takes: its own, then (when the store has a
        size limit) the other mounts' of its slot, which the script counts exactly. Built once,
        as bytes when ASCII (the same bytes whatever the client's encoding, and the client
        sends bytes without converting them on every call)."""
        keys = self._write_keys.get(spec.name)
        if keys is None:
            out = list(spec.book.keys())
            if self.max_store_size is not None:
                for s in self.peers(spec)[0]:
                    out.extend(s.book.keys())
            keys = self._write_keys[spec.name] = tuple(k.encode() if k.isascii() else k for k in out)
        return keys

    def terms(self, spec: MountSpec, ttl_ms: int, ctype: str, others: int) -> tuple[bytes, bytes, bytes]:
        """``kv_set``'s arguments after the value: TTL, the metadata after the size (see
        :func:`meta_tail`) and the limits (the mount's max entries, the store's max size, the
        other slots' usage), built once per mount, TTL and content type while the other slots
        hold nothing."""
        terms = self._terms.get((spec.name, ttl_ms, ctype)) if not others else None
        if terms is None:
            limits = f"{spec.mount.max_entries or 0} {self.max_store_size or 0} {others}"
            terms = (str(ttl_ms).encode(), meta_tail(ttl_ms, ctype).encode(), limits.encode())
            if not others:
                if len(self._terms) >= 256:
                    self._terms.clear()
                self._terms[(spec.name, ttl_ms, ctype)] = terms
        return terms

    def flush_keys(self, slot_: int, named: tuple[MountSpec, ...]) -> tuple[KeyT, ...]:
        """``kv_flush``'s bookkeeping keys: the named mounts', then (when the store has a size
        limit) the other mounts' of the slot, counted exactly; built once per set of mounts, as
        bytes when ASCII (see :meth:`write_keys`)."""
        names = tuple(s.name for s in named)
        keys = self._flush_keys.get(names)
        if keys is None:
            out: list[str] = []
            for spec in named:
                out.extend(spec.book.keys())
            if self.max_store_size is not None:
                for s in self.specs.values():
                    if s.slot == slot_ and s.name not in names:
                        out.extend(s.book.keys())
            keys = tuple(k.encode() if k.isascii() else k for k in out)
            if len(self._flush_keys) >= 256:
                self._flush_keys.clear()
            self._flush_keys[names] = keys
        return keys

    def head(self, group: int, ttl_ms: int | None, ctype: str) -> bytes:
        """``kv_flush``'s head of one write: ``d<g>`` for a delete (``ttl_ms`` None), else a set's."""
        text = self._heads.get((group, -1 if ttl_ms is None else ttl_ms, ctype))
        if text is None:
            text = (f"d{group}" if ttl_ms is None else f"s{group} {ttl_ms} {ctype}").encode()
            if len(self._heads) >= 256:
                self._heads.clear()
            self._heads[(group, -1 if ttl_ms is None else ttl_ms, ctype)] = text
        return text

    def mounts(self) -> list[dict[str, str]]:
        return [{"name": s.name, "mode": s.mount.mode, "prefix": s.mount.prefix} for s in self.specs.values()]

    def schema(self, name: str) -> list[dict[str, Any]]:
        spec = self.spec(name)
        return [f.as_dict() for f in (spec.fields or {}).values()]


# --------------------------------------------------------------------------- flows


def _quota_error(spec: MountSpec, code: int, limit: int, key: str) -> QuotaExceeded:
    if code == -1:
        msg = f"mount {spec.name!r} is full: {limit} entries (max_entries); {key!r} was not written"
        return QuotaExceeded(msg, quota="max_entries", limit=limit, mount=spec.name)
    msg = f"the store would exceed {limit} bytes (max_store_size); {key!r} was not written"
    return QuotaExceeded(msg, quota="max_store_size", limit=limit, mount=spec.name)


def _prechecked(lua: LuaScript, keys: tuple[KeyT, ...], args: tuple[Any, ...]) -> Script:
    """A :class:`Script` whose keys share one slot by construction, built without checking it
    again: a record key, its mount's bookkeeping and the other mounts of that slot all carry
    the slot's hash tag (``mount_base``; the peers are chosen by slot), so the CRC of every key
    on every write would only repeat what the configuration already proved."""
    return trusted_script(lua, keys, args)


_KV_SET = load("kv_set")  # the hot write's script, looked up once


def others_used(store: KVStore, spec: MountSpec) -> Flow[int]:
    """Bytes used by mounts in other slots (one read), 0 when there are none or no store limit."""
    _, other = store.peers(spec)
    if store.max_store_size is None or not other:
        return 0
    replies = yield Batch(tuple(Command("GET", s.book.used) for s in other))
    return sum(int(r) for r in replies if r is not None)


def set_script(
    store: KVStore,
    spec: MountSpec,
    key: str,
    data: bytes,
    ctype: str,
    ttl_ms: int | None,
    others: int,
    cas: tuple[int, bytes] | None = None,
) -> Script:
    """``kv_set`` for one write: the record and the bookkeeping keys, the value and its terms.
    A write with a TTL sends its whole metadata (size first): the script compares and stores it
    as sent, turning no number into text."""
    ttl, tail, limits = store.terms(spec, ttl_ms or 0, ctype, others)
    if ttl_ms:
        tail = b"%d%s" % (len(data), tail)
    args = (data, ttl, tail, limits) if cas is None else (data, ttl, tail, limits, *cas)
    return trusted_script(_KV_SET, (spec.base + "k:" + key, *store.write_keys(spec)), args)  # as _prechecked


def _check_set_reply(store: KVStore, spec: MountSpec, key: str, reply: Any) -> bool:
    """True when written, False on a compare-and-set conflict; raises on a quota."""
    if reply == 1:
        return True
    if reply == 0:
        return False
    code = int(reply)
    limit = spec.mount.max_entries if code == -1 else store.max_store_size
    raise _quota_error(spec, code, limit or 0, key)


def get(spec: MountSpec, key: str, pending: Pending | None = None) -> Flow[tuple[bool, Any]]:
    """``(found, value)``; ``value`` is the schema default (or ``None``) when missing."""
    if pending is not None and pending.kind == "set":
        return True, spec.decode(pending.data)
    if pending is not None and pending.kind == "delete":
        return False, spec.default(key)
    raw = yield Command("GET", spec.record(key))
    if pending is not None:  # buffered merges over the stored value
        base = spec.decode(raw) if raw is not None else _merge_base(spec, key)
        return True, merge_value(spec, key, base, pending.partials)[0]
    if raw is None:
        return False, spec.default(key)
    return True, spec.decode(raw)


def has(spec: MountSpec, key: str, pending: Pending | None = None) -> Flow[bool]:
    if pending is not None:
        return pending.kind != "delete"
    n = yield Command("EXISTS", spec.record(key))
    return bool(n)


def set_(
    store: KVStore, spec: MountSpec, key: str, data: bytes, ctype: str, ttl_ms: int | None
) -> Flow[bool]:
    """Write an already encoded value (``spec.encode``) with quotas and TTL in one script."""
    others = (yield from others_used(store, spec)) if store.elsewhere(spec) else 0
    reply = yield set_script(store, spec, key, data, ctype, ttl_ms, others)
    return _check_set_reply(store, spec, key, reply)


def _merge_base(spec: MountSpec, key: str) -> dict[str, Any]:
    base = spec.default(key)
    return base if isinstance(base, dict) else {}


def merge_value(
    spec: MountSpec, key: str, base: Any, partials: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], bytes, str]:
    """Shallow-merge ``partials`` into ``base`` (a dict); the result, encoded, and its type."""
    if not isinstance(base, dict):
        raise SchemaTypeError(f"merge needs a dict under {key!r}; it holds a {type(base).__name__}")
    merged = dict(base)
    for p in partials:
        merged.update(p)
    data, ctype = spec.encode(key, merged)
    return merged, data, ctype


def check_partial(partial: object) -> dict[str, Any]:
    if not isinstance(partial, Mapping):
        raise TypeError(f"merge takes a dict of fields, not {type(partial).__name__}")
    for k in partial:
        if not isinstance(k, str):
            raise TypeError(f"merge field names are str, got {k!r}")
    return dict(partial)


def merge(
    store: KVStore,
    spec: MountSpec,
    key: str,
    partials: Sequence[Mapping[str, Any]],
    ttl_ms: int | None,
) -> Flow[bool]:
    """Atomic merge: read, merge (exact JSON, schema-checked), write iff unchanged; retried."""
    others = yield from others_used(store, spec)
    rec = spec.record(key)
    for attempt in range(MERGE_RETRIES):
        raw = yield Command("GET", rec)
        if raw is None:
            base: Any = _merge_base(spec, key)
            cas, expected = 1, b""
        else:
            expected = as_bytes(raw)
            base, cas = spec.decode(expected), 2
        _, data, ctype = merge_value(spec, key, base, partials)
        reply = yield set_script(store, spec, key, data, ctype, ttl_ms, others, (cas, expected))
        if _check_set_reply(store, spec, key, reply):
            return True
        yield Sleep(0.0005 * min(attempt, 20))
    raise MergeConflict(f"merge of {key!r} lost {MERGE_RETRIES} compare-and-set races in a row")


def delete(spec: MountSpec, key: str) -> Flow[bool]:
    reply = yield delete_script(spec, key)
    return bool(reply)


def delete_script(spec: MountSpec, key: str) -> Script:
    return Script(load("kv_delete"), keys=(spec.record(key), *spec.book.keys()), args=(key,))


def keys_page(spec: MountSpec, start_after: str | None, limit: int) -> Flow[list[str]]:
    reply = yield Script(
        load("kv_keys"), keys=(spec.book.index, spec.book.expiry), args=(start_after or "", limit)
    )
    return [as_str(k) for k in reply]


def keys(spec: MountSpec, start_after: str | None = None, limit: int | None = None) -> Flow[list[str]]:
    """Live key names in lexicographic order, from the tracked index, a page at a time."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    if start_after is not None and not isinstance(start_after, str):
        raise TypeError("start_after must be a key name (str)")
    out: list[str] = []
    cursor = start_after
    while True:
        want = PAGE if limit is None else min(PAGE, limit - len(out))
        page = yield from keys_page(spec, cursor, want)
        out.extend(page)
        if len(page) < want or (limit is not None and len(out) >= limit):
            return out
        cursor = page[-1]


def get_all(spec: MountSpec, refused: set[str]) -> Flow[dict[str, Any]]:
    """Every live record (schema defaults for unset fields).

    One ``SORT_RO <index> BY nosort GET # GET <base>k:*``: the server walks the index and reads
    each record by name, so names and values come back together in one round trip, with no
    script turning them into Lua values and back. Where SORT may not read by pattern (an ACL
    without read access to every key, a server without SORT_RO, a prefix holding ``*``), the
    mount's name goes in ``refused`` and its reads page through the index (``kv_keys``) and
    MGET the records, ``PAGE`` at a time.
    """
    out: dict[str, Any] = {}
    after: str | None = None
    if spec.sort_op is not None and spec.name not in refused:
        try:
            flat = yield spec.sort_op
        except ResponseError:
            refused.add(spec.name)
        else:
            names, values = flat[0::2], flat[1::2]
            if None in values:  # expired since, or past its deadline and not yet purged
                kept = [i for i, v in enumerate(values) if v is not None]
                names, values = [names[i] for i in kept], [values[i] for i in kept]
            out = dict(zip(texts(names), decode_values(spec.mount.codec, values), strict=True))
            if len(flat) < 2 * SORT_PAGE:
                return _with_defaults(spec, out)
            after = as_str(flat[-2])
    names = yield from keys(spec, after)
    for i in range(0, len(names), PAGE):
        chunk = names[i : i + PAGE]
        recs = [spec.record(k) for k in chunk]
        values = yield Command("MGET", *recs, keys=recs)
        for k, raw in zip(chunk, values, strict=True):
            if raw is not None:
                out[k] = spec.decode(raw)
    return _with_defaults(spec, out)


def _with_defaults(spec: MountSpec, out: dict[str, Any]) -> dict[str, Any]:
    if spec.fields is not None:
        for k in spec.fields:
            if k not in out:
                out[k] = spec.default(k)
    return out


def clear(spec: MountSpec) -> Flow[bool]:
    """Delete every record of the mount and reset its bookkeeping (batches of ``PAGE``)."""
    script = load("kv_clear")
    batch: list[str] = []
    while True:
        recs = [spec.record(k) for k in batch]
        reply = yield Script(script, keys=(*spec.book.keys(), *recs), args=(*batch, PAGE))
        batch = [as_str(k) for k in reply]
        if not batch:
            return True


def meta_tail(ttl_ms: int, ctype: str) -> str:
    """A record's metadata after its size. With a TTL: ``;<TTL ms>;<content type>``, which an
    overwrite of the same size, TTL and type leaves as it is (the write's time is its deadline in
    the expiry zset minus the TTL); without: ``:<content type>``, after which the script puts
    ``:<time in ms>`` in front (``size:updated_ms:content_type``)."""
    return f";{ttl_ms};{ctype}" if ttl_ms else f":{ctype}"


def parse_meta(meta: str, deadline: float | None) -> tuple[int, float, str]:
    """Size, time of the last write (seconds) and content type from a record's metadata (either
    form, see :func:`meta_tail`) and its deadline in the expiry zset (ms)."""
    if ";" in meta.split(":", 1)[0]:
        size, ttl, ctype = meta.split(";", 2)
        return int(size), ((deadline or 0) - int(ttl)) / 1000, ctype
    size, updated, ctype = meta.split(":", 2)
    return int(size), int(updated) / 1000, ctype


def info(spec: MountSpec, key: str) -> Flow[KVInfo | None]:
    """One round trip: metadata from the index hash, the record's remaining TTL and its
    deadline in the expiry zset (for the time of its last write)."""
    book, rec = spec.book, spec.record(key)
    reads = (Command("HGET", book.meta, key), Command("PTTL", rec), Command("ZSCORE", book.expiry, key))
    meta, pttl, deadline = yield Batch(reads)
    if meta is None or int(pttl) == -2:
        return None
    size, updated, ctype = parse_meta(as_str(meta), None if deadline is None else float(deadline))
    ttl = int(pttl)
    return KVInfo(key, size, ctype, updated, ttl / 1000 if ttl >= 0 else None)


# --------------------------------------------------------------------------- write buffer


@dataclass(slots=True)
class Pending:
    """A buffered write: ``set`` (encoded data), ``delete``, or ``merge`` (partials over the stored value)."""

    kind: Literal["set", "delete", "merge"]
    data: bytes = b""
    ctype: str = ""
    ttl_ms: int | None = None
    partials: Sequence[dict[str, Any]] = ()


class WriteBuffer:
    """The ``dispose`` policy's buffer: the last write per (mount, key), in first-write order."""

    def __init__(self, lock: AbstractContextManager[Any] | None = None) -> None:
        self.entries: dict[tuple[str, str], Pending] = {}
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, mount: str, key: str) -> Pending | None:
        return self.entries.get((mount, key))

    def set(self, mount: str, key: str, data: bytes, ctype: str, ttl_ms: int | None) -> None:
        self.entries[(mount, key)] = Pending("set", data, ctype, ttl_ms)

    def delete(self, mount: str, key: str) -> None:
        self.entries[(mount, key)] = Pending("delete")

    def merge(self, spec: MountSpec, key: str, partial: dict[str, Any], ttl_ms: int | None) -> None:
        """Fold ``partial`` into the buffered write (validated now, like a direct write)."""
        with self._lock:
            self._merge(spec, key, partial, ttl_ms)

    def _merge(self, spec: MountSpec, key: str, partial: dict[str, Any], ttl_ms: int | None) -> None:
        prev = self.entries.get((spec.name, key))
        if prev is None or prev.kind == "merge":
            partials = [*(prev.partials if prev else []), partial]
            merge_value(spec, key, _merge_base(spec, key), partials)  # schema and type check
            self.entries[(spec.name, key)] = Pending("merge", ttl_ms=ttl_ms, partials=partials)
            return
        base = spec.decode(prev.data) if prev.kind == "set" else _merge_base(spec, key)
        _, data, ctype = merge_value(spec, key, base, [partial])
        self.entries[(spec.name, key)] = Pending("set", data, ctype, ttl_ms)

    def drop(self, mount: str) -> None:
        with self._lock:
            for k in [k for k in self.entries if k[0] == mount]:
                del self.entries[k]

    def drain(self) -> list[tuple[str, str, Pending]]:
        """Take every buffered write (the swap is atomic, so concurrent writers lose nothing)."""
        with self._lock:
            entries, self.entries = self.entries, {}
        return [(m, k, p) for (m, k), p in entries.items()]


def usage_elsewhere(store: KVStore, slots: Iterable[int]) -> Flow[dict[int, int]]:
    """For each of ``slots``: the bytes used by the mounts in other slots, read in one round
    trip; no read when the store has no size limit or every mount shares those slots."""
    if store.max_store_size is None or store.one_slot:  # no limit, or no mount elsewhere
        return {}
    slots = list(slots)
    outside = [s for s in store.specs.values() if any(s.slot != slot for slot in slots)]
    if not outside:
        return {}
    replies = yield Batch(tuple(Command("GET", s.book.used) for s in outside))
    used = [int(r) if r is not None else 0 for r in replies]
    return {slot: sum(u for s, u in zip(outside, used, strict=True) if s.slot != slot) for slot in slots}


Write = tuple[MountSpec, str, Pending]
_NO_TTL = -1  # not a TTL: the head of the next set is looked up again


def flush_script(store: KVStore, slot_: int, writes: Sequence[Write], others: int) -> Script:
    """``kv_flush`` for the buffered sets and deletes of one slot, in their order (one write
    per record, as the buffer keeps them)."""
    groups: dict[str, int] = {}
    named: list[MountSpec] = []
    keys: list[KeyT] = []
    tail: list[Any] = []
    add_key, add = keys.append, tail.append
    last: MountSpec | None = None
    g, rec, ctype, head = 0, "", "", b""
    ttl_ms: int | None = _NO_TTL
    for spec, key, p in writes:
        if spec is not last:  # writes in a row mostly share their mount, TTL and content type
            last, rec, ttl_ms = spec, spec.base + "k:", _NO_TTL
            g = groups.get(spec.name) or 0
            if not g:
                g = groups[spec.name] = len(named) + 1
                named.append(spec)
        add_key(rec + key)
        if p.kind == "delete":
            add(store.head(g, None, ""))
            ttl_ms = _NO_TTL
            continue
        if p.ttl_ms != ttl_ms or p.ctype != ctype:
            ttl_ms, ctype = p.ttl_ms, p.ctype
            head = store.head(g, ttl_ms or 0, ctype)
        add(head)
        add(p.data)
    keys.extend(store.flush_keys(slot_, tuple(named)))
    head_args = (len(writes), len(named), store.max_store_size or 0, others)
    entries = tuple(s.mount.max_entries or 0 for s in named)
    return _prechecked(load("kv_flush"), tuple(keys), (*head_args, *entries, *tail))


def flush(store: KVStore, items: Iterable[tuple[str, str, Pending]]) -> Flow[list[Exception]]:
    """Send buffered writes: the sets and deletes of each slot in one ``kv_flush`` run (the
    slots' runs in one pipeline; a read of the other slots' usage first when mounts span slots
    and the store has a size limit), then the merges (compare-and-set each).

    Returns the errors (quota refusals) of the writes that were refused; the others are written.
    """
    errors: list[Exception] = []
    slots: dict[int, list[Write]] = {}
    merges: list[Write] = []
    specs = store.specs  # the buffer took these mounts' names from a checked write
    for mount, key, p in items:
        spec = specs[mount]
        if p.kind == "merge":
            merges.append((spec, key, p))
        else:
            slots.setdefault(spec.slot, []).append((spec, key, p))
    if slots:
        others = yield from usage_elsewhere(store, slots)
        ops = tuple(flush_script(store, sl, w, others.get(sl, 0)) for sl, w in slots.items())
        if len(ops) == 1:  # alone it goes as EVALSHA: its source is not sent every time
            try:
                replies: list[Any] = [(yield ops[0])]
            except ResponseError as exc:
                replies = [exc]
        else:  # one pipeline: one round trip on one node, one per node on a Cluster, in parallel
            replies = yield Batch(ops, raise_on_error=False)
        for writes, reply in zip(slots.values(), replies, strict=True):
            if isinstance(reply, Exception):
                errors.append(reply)
                continue
            for j in range(0, len(reply), 2):  # the refused sets: position, code (mostly none)
                spec, key, _ = writes[int(reply[j]) - 1]
                code = int(reply[j + 1])
                limit = spec.mount.max_entries if code == -1 else store.max_store_size
                errors.append(_quota_error(spec, code, limit or 0, key))
    for spec, key, p in merges:
        try:
            yield from merge(store, spec, key, p.partials, p.ttl_ms)
        except (QuotaExceeded, SchemaError, MergeConflict) as exc:
            errors.append(exc)
    return errors


def flush_buffer(store: KVStore, buffer: WriteBuffer) -> Flow[int]:
    """Drain ``buffer`` and write it; the number of writes sent. Raises the first refusal."""
    items = buffer.drain()
    if not items:
        return 0
    errors = yield from flush(store, items)
    if errors:
        raise errors[0]
    return len(items)


# --------------------------------------------------------------------------- public operations
# One flow per public method: the shells run these and nothing else.


def op_get(store: KVStore, buffer: WriteBuffer, name: str, key: str) -> Flow[Any]:
    spec, key = _reading(store, name, key, "get")
    _, value = yield from get(spec, key, buffer.lookup(name, key))
    return value


def op_get_or(store: KVStore, buffer: WriteBuffer, name: str, key: str, default: Any) -> Flow[Any]:
    spec, key = _reading(store, name, key, "get_or")
    found, value = yield from get(spec, key, buffer.lookup(name, key))
    return value if found else default


def op_has(store: KVStore, buffer: WriteBuffer, name: str, key: str) -> Flow[bool]:
    spec, key = _reading(store, name, key, "has")
    return (yield from has(spec, key, buffer.lookup(name, key)))


def buffer_set(
    store: KVStore, buffer: WriteBuffer, name: str, key: str, value: Any, ttl: float | None
) -> bool:
    """A ``dispose`` store's ``set``: checked and encoded now, buffered (no I/O: the shells call
    it directly, without a runner)."""
    spec, key = _writing(store, name, key, "set")
    data, ctype = spec.encode(key, value)
    buffer.set(name, key, data, ctype, spec.ttl_ms if ttl is None else spec.mount.ttl_ms(ttl))
    return True


def op_set(
    store: KVStore, buffer: WriteBuffer, name: str, key: str, value: Any, ttl: float | None
) -> Flow[bool]:
    if store.write_policy == "dispose":
        return buffer_set(store, buffer, name, key, value, ttl)
    spec, key = _writing(store, name, key, "set")
    ttl_ms = spec.ttl_ms if ttl is None else spec.mount.ttl_ms(ttl)
    data, ctype = spec.encode(key, value)
    if store.elsewhere(spec):
        return (yield from set_(store, spec, key, data, ctype, ttl_ms))
    reply = yield set_script(store, spec, key, data, ctype, ttl_ms, 0)
    return reply == 1 or _check_set_reply(store, spec, key, reply)


def op_merge(
    store: KVStore, buffer: WriteBuffer, name: str, key: str, partial: Any, ttl: float | None
) -> Flow[bool]:
    spec, key = _writing(store, name, key, "merge")
    part = check_partial(partial)
    ttl_ms = spec.write_ttl_ms(ttl)
    if store.write_policy == "dispose":
        buffer.merge(spec, key, part, ttl_ms)
        return True
    return (yield from merge(store, spec, key, [part], ttl_ms))


def op_delete(store: KVStore, buffer: WriteBuffer, name: str, key: str) -> Flow[bool]:
    spec, key = _writing(store, name, key, "delete")
    if store.write_policy == "dispose":
        prev = buffer.lookup(name, key)
        buffer.delete(name, key)
        if prev is not None:
            return prev.kind != "delete"
        return (yield from has(spec, key))
    return (yield from delete(spec, key))


def op_keys(
    store: KVStore, buffer: WriteBuffer, name: str, start_after: str | None, limit: int | None
) -> Flow[list[str]]:
    spec = store.spec(name)
    spec.mount.check_read("keys", name)
    if buffer:
        yield from flush_buffer(store, buffer)
    return (yield from keys(spec, start_after, limit))


def op_get_all(store: KVStore, buffer: WriteBuffer, name: str) -> Flow[dict[str, Any]]:
    spec = store.spec(name)
    spec.mount.check_read("get_all", name)
    if buffer:
        yield from flush_buffer(store, buffer)
    return (yield from get_all(spec, store.sort_refused))


def op_clear(store: KVStore, buffer: WriteBuffer, name: str) -> Flow[bool]:
    spec = store.spec(name)
    spec.mount.check_write("clear", name)
    buffer.drop(name)
    return (yield from clear(spec))


def op_info(store: KVStore, buffer: WriteBuffer, name: str, key: str) -> Flow[KVInfo | None]:
    spec, key = _reading(store, name, key, "info")
    if buffer.lookup(name, key) is not None:
        yield from flush_buffer(store, buffer)
    return (yield from info(spec, key))


def _reading(store: KVStore, name: str, key: object, what: str) -> tuple[MountSpec, str]:
    spec = store.spec(name)
    spec.mount.check_read(what, name)
    return spec, spec.check_key(key)


def _writing(store: KVStore, name: str, key: object, what: str) -> tuple[MountSpec, str]:
    spec = store.spec(name)
    spec.mount.check_write(what, name)
    return spec, spec.check_key(key)
