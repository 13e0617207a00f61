"""Value codecs: orjson by default, bytes passed through, signed pickle only on request.

Stored format of :class:`JsonCodec`:

* JSON text (orjson) for JSON types, dataclasses, ``datetime``, ``UUID``, ``Enum``;
* ``bytes`` as ``b"\\xff" + payload``: the payload untouched. ``0xff`` never starts UTF-8 JSON,
  so a stored JSON document and stored bytes can't be confused.

:class:`PickleCodec` writes ``b"\\xfe" + HMAC-SHA256(secret, pickle) + pickle`` and refuses to
unpickle anything whose signature does not match, so a writer to Redis cannot run code in readers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import pickle
from typing import Any, Protocol, runtime_checkable

import orjson

from ..errors import DecodeError

__all__ = [
    "BYTES_MARK",
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "as_bytes",
    "as_str",
    "default_codec",
    "json_dumps",
]

BYTES_MARK = b"\xff"
PICKLE_MARK = b"\xfe"


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes for Redis and back."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes | str) -> Any: ...


def as_bytes(data: bytes | str | memoryview) -> bytes:
    """Normalise a reply or argument to ``bytes`` (clients may decode responses)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    return bytes(data)


def as_str(data: bytes | str) -> str:
    """Normalise a reply to ``str``."""
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


def json_dumps(value: Any, option: int = 0) -> bytes:
    """orjson, refusing what JSON cannot hold exactly: ``TypeError`` for a type it cannot encode,
    ``ValueError`` for NaN and infinities (orjson would store them as ``null``)."""
    try:
        data = orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as exc:
        raise TypeError(
            f"cannot encode a value of type {_culprit(value)} as JSON ({exc}); "
            "return JSON types, dataclasses, datetime, UUID or bytes, or pass codec="
        ) from None
    if b"null" in data:  # the only way a non-finite float shows: look only then
        where = _non_finite(value, "value")
        if where is not None:
            raise ValueError(
                f"{where} is NaN or infinite: JSON has no such number, and "
                "storing it would read back as None; store None, a string, or pass codec="
            )
    return data


def _non_finite(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first NaN/infinity inside ``value`` (JSON containers, dataclasses)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if depth > 64:
        return None
    items: Any = ()
    if isinstance(value, dict):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f"{path}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    for sub, v in items:
        found = _non_finite(v, sub, depth + 1)
        if found is not None:
            return found
    return None


_dumps = orjson.dumps
_loads = orjson.loads
_MARKS = b"\xfe"  # BYTES_MARK and PICKLE_MARK are the two byte values >= this one
_PLAIN = (str, bool, type(None))  # exact types orjson encodes as they are: nothing to check


class JsonCodec:
    """orjson for JSON-like values; ``bytes`` pass through; anything else is a ``TypeError``."""

    __slots__ = ("_opts",)

    def __init__(self, *, sort_keys: bool = False) -> None:
        self._opts = orjson.OPT_SORT_KEYS if sort_keys else 0

    def encode(self, value: Any) -> bytes:
        t = type(value)
        if t in _PLAIN:  # the hot path of short values: no float, no container, cannot fail
            return _dumps(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return BYTES_MARK + bytes(value)
        try:
            data = _dumps(value, option=self._opts)
        except orjson.JSONEncodeError:
            return json_dumps(value, self._opts)  # raises, naming the culprit
        if b"null" in data:  # maybe a NaN stored as null: json_dumps looks and raises
            return json_dumps(value, self._opts)
        return data

    def decode(self, data: bytes | str) -> Any:
        if type(data) is not bytes:
            data = as_bytes(data)
        if data[:1] >= _MARKS:
            if data[:1] == BYTES_MARK:
                return data[1:]
            raise DecodeError("value was written by PickleCodec; this codec never unpickles")
        try:
            return _loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"stored value is not valid JSON: {exc}") from None

    def __repr__(self) -> str:
        return "JsonCodec()"


def _culprit(value: Any, depth: int = 0) -> str:
    """Name the type that orjson could not encode, looking one container level down."""
    if depth < 3 and isinstance(value, dict):
        for v in value.values():
            try:
                orjson.dumps(v)
            except orjson.JSONEncodeError:
                return _culprit(v, depth + 1)
    if depth < 3 and isinstance(value, (list, tuple)):
        for v in value:
            try:
                orjson.dumps(v)
            except orjson.JSONEncodeError:
                return _culprit(v, depth + 1)
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class PickleCodec:
    """Pickle signed with HMAC-SHA256. Opt-in only: ``PickleCodec(secret=b"...")``."""

    __slots__ = ("_key",)

    def __init__(self, *, secret: bytes | str) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("PickleCodec needs a secret of at least 16 bytes")
        self._key = key

    def encode(self, value: Any) -> bytes:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return PICKLE_MARK + hmac.new(self._key, body, hashlib.sha256).digest() + body

    def decode(self, data: bytes | str) -> Any:
        raw = as_bytes(data)
        if raw[:1] != PICKLE_MARK or len(raw) < 33:
            raise DecodeError("value is not a signed pickle")
        sig, body = raw[1:33], raw[33:]
        if not hmac.compare_digest(sig, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise DecodeError("pickle signature mismatch: refusing to unpickle")
        return pickle.loads(body)

    def __repr__(self) -> str:
        return "PickleCodec(secret=***)"


_DEFAULT = JsonCodec()


def default_codec() -> JsonCodec:
    """The shared default codec (orjson)."""
    return _DEFAULT
