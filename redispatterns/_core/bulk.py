"""Decoding large replies without a Python-level step per element where it can be avoided.

A page of a thousand leaderboard rows or a mount's every record arrives as flat lists of
bytes; these helpers turn whole lists at a time with C-level ``map`` (member names, scores,
JSON values), falling back to the per-element path only for what needs it (absent values,
bytes stored through the codec's mark, a custom codec).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import orjson

from .codec import Codec, JsonCodec

__all__ = ["decode_values", "texts"]


def texts(items: Sequence[Any]) -> list[str]:
    """Reply items (``bytes``, or ``str`` from a decoding client) as ``str``."""
    if not items or type(items[0]) is str:
        return list(items)
    try:
        return list(map(bytes.decode, items))  # strict UTF-8: what a str written through redis-py is
    except UnicodeDecodeError:
        return [i.decode("utf-8", "surrogateescape") for i in items]


def decode_values(codec: Codec, raw: Sequence[Any]) -> list[Any]:
    """Each stored value through ``codec`` (``None`` stays ``None``).

    With the default :class:`JsonCodec` and no absent value, one ``map(orjson.loads, ...)``
    decodes the whole list; a value it refuses (bytes stored behind the codec's mark, or
    anything that is not JSON) sends the list through ``codec.decode`` one by one, which
    returns the bytes or raises the codec's ``DecodeError``.
    """
    n = len(raw)
    if not n:
        return []
    absent = raw.count(None)
    if absent == n:
        return list(repeat(None, n))
    if not absent and type(codec) is JsonCodec:
        try:
            return list(map(orjson.loads, raw))
        except (orjson.JSONDecodeError, TypeError):
            pass
    decode = codec.decode
    return [None if r is None else decode(r) for r in raw]
