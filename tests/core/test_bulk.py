"""Column decoding of large replies: the fast paths give what the per-element codec gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from redispatterns._core.bulk import decode_values, texts
from redispatterns._core.codec import JsonCodec, PickleCodec
from redispatterns.errors import DecodeError


def test_texts_of_bytes_and_of_str_replies() -> None:
    assert texts([]) == []
    assert texts([b"a", "é".encode()]) == ["a", "é"]
    assert texts(["a", "b"]) == ["a", "b"]
    assert texts([b"ok", b"\xe9"]) == ["ok", "\udce9"]  # not UTF-8: escaped, as as_str does


@pytest.mark.parametrize("codec", [JsonCodec(), JsonCodec(sort_keys=True)])
def test_decode_values_matches_the_codec_one_by_one(codec: Any) -> None:
    values: list[Any] = [{"a": 1}, [1, 2], "x", 3, None, b"raw"]
    stored = [None if v is None else codec.encode(v) for v in values]
    assert decode_values(codec, stored) == [codec.decode(s) if s else None for s in stored] == values
    assert decode_values(codec, stored[:4]) == values[:4]  # the one-map path
    assert decode_values(codec, []) == []
    assert decode_values(codec, [None, None]) == [None, None]
    assert decode_values(codec, [orjson.dumps(v).decode() for v in values[:4]]) == values[:4]  # str replies
    with pytest.raises(DecodeError):
        decode_values(codec, [b"{", b"1"])
    signed = PickleCodec(secret=b"0123456789abcdef").encode(1)
    with pytest.raises(DecodeError, match="PickleCodec"):
        decode_values(codec, [orjson.dumps(1), signed])


def test_decode_values_with_another_codec() -> None:
    codec = PickleCodec(secret=b"0123456789abcdef")
    assert decode_values(codec, [codec.encode({1, 2}), None]) == [{1, 2}, None]
