"""Codecs, mounts and server detection: pure."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from redispatterns import DecodeError, JsonCodec, Mount, PickleCodec
from redispatterns._core.codec import as_bytes, as_str, default_codec
from redispatterns._core.mount import check_prefixes_disjoint
from redispatterns._core.server import parse_info, parse_version


class Color(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: int


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(json_values)
def test_json_round_trip(value: object) -> None:
    c = JsonCodec()
    assert c.decode(c.encode(value)) == value


@given(json_values)
def test_stored_json_is_exactly_orjsons(value: object) -> None:
    # the short-value fast path and the checked path write the same bytes
    assert JsonCodec().encode(value) == orjson.dumps(value)
    assert JsonCodec(sort_keys=True).encode(value) == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@given(st.binary())
def test_bytes_pass_through_untouched(data: bytes) -> None:
    c = JsonCodec()
    enc = c.encode(data)
    assert enc[1:] == data
    assert c.decode(enc) == data
    assert c.decode(enc.decode("latin-1").encode("latin-1")) == data


def test_rich_types_encode() -> None:
    c = default_codec()
    u = uuid.UUID(int=7)
    out = c.decode(
        c.encode({"u": u, "d": dt.datetime(2026, 1, 2, 3, 4, 5), "c": Color.RED, "p": Point(1, 2)})
    )
    assert out == {"u": str(u), "d": "2026-01-02T03:04:05", "c": "red", "p": {"x": 1, "y": 2}}


def test_unencodable_type_is_named() -> None:
    class Widget:
        pass

    with pytest.raises(TypeError, match="Widget"):
        JsonCodec().encode({"ok": 1, "bad": [Widget()]})
    with pytest.raises(TypeError, match="set"):
        JsonCodec().encode({1, 2})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_not_stored_as_null(bad: float) -> None:
    @dataclass
    class Point:
        x: float

    codec = JsonCodec()
    for value, where in (
        (bad, "value"),
        ({"a": [1.0, bad]}, "value['a'][1]"),
        ((1, {"k": bad}), "value[1]['k']"),
        (Point(bad), "value.x"),
    ):
        with pytest.raises(ValueError, match=r"NaN or infinite") as info:
            codec.encode(value)
        assert where in str(info.value)
    # a real null and finite floats still round-trip
    assert codec.decode(codec.encode({"a": None, "b": 1.5})) == {"a": None, "b": 1.5}


def test_bad_stored_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(b"{not json")
    with pytest.raises(DecodeError, match="never unpickles"):
        JsonCodec().decode(PickleCodec(secret=b"s" * 16).encode(1))
    assert JsonCodec().decode('"text"') == "text"
    assert repr(JsonCodec()) == "JsonCodec()"
    assert JsonCodec(sort_keys=True).encode({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_signed_pickle() -> None:
    codec = PickleCodec(secret="0123456789abcdef")
    assert codec.decode(codec.encode({1, 2})) == {1, 2}
    tampered = bytearray(codec.encode([1]))
    tampered[-2] ^= 1
    with pytest.raises(DecodeError, match="signature"):
        codec.decode(bytes(tampered))
    with pytest.raises(DecodeError, match="not a signed pickle"):
        codec.decode(b"plain")
    other = PickleCodec(secret=b"another-secret-16")
    with pytest.raises(DecodeError):
        other.decode(codec.encode(1))
    with pytest.raises(ValueError, match="16 bytes"):
        PickleCodec(secret=b"short")
    assert "***" in repr(codec)


def test_as_bytes_as_str() -> None:
    assert as_bytes("é") == "é".encode()
    assert as_bytes(memoryview(b"x")) == b"x"
    assert as_str(b"x") == "x" and as_str("y") == "y"


def test_mount_validation_and_modes() -> None:
    m = Mount(prefix="app:", ttl=1.5)
    assert m.ttl_ms() == 1500 and m.ttl_ms(2) == 2000
    assert Mount(prefix="a:").ttl_ms() is None
    ro = Mount(mode="read", prefix="ro:")
    ro.check_read("get")
    with pytest.raises(PermissionError, match="read-only"):
        ro.check_write("set", "cfg")
    wo = Mount(mode="write", prefix="wo:")
    with pytest.raises(PermissionError, match="write-only"):
        wo.check_read("get")
    assert not ro.can_write and not wo.can_read
    for bad, err in [
        ({"mode": "rw"}, ValueError),
        ({"prefix": ""}, ValueError),
        ({"prefix": 3}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"ttl": "1"}, TypeError),
        ({"max_entries": 0}, ValueError),
        ({"max_entries": 1.5}, TypeError),
        ({"codec": object()}, TypeError),
    ]:
        with pytest.raises(err):
            Mount(**bad)  # type: ignore[arg-type]


def test_overlapping_prefixes_rejected() -> None:
    check_prefixes_disjoint({"a": "app:a:", "b": "app:b:"})
    with pytest.raises(ValueError, match="overlap"):
        check_prefixes_disjoint({"all": "app:", "user": "app:user:"})


def test_valkey_is_not_mistaken_for_redis_7_2() -> None:
    v = parse_info({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.8"})
    assert (v.kind, v.version) == ("valkey", (8, 1, 8))
    assert v.has("zrank_withscore") and not v.has("xadd_idmp") and not v.has("hash_field_ttl")
    r = parse_info("# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n")
    assert (r.kind, r.version, r.mode) == ("redis", (7, 0, 15), "cluster")
    assert r.has("sharded_pubsub") and not r.has("zrank_withscore")
    assert str(r) == "redis 7.0.15 (cluster)"
    assert parse_info({"redis_version": "8.6.0"}).has("xadd_idmp")
    assert parse_version("7") == (7, 0, 0) and parse_version("x.y") == (0, 0, 0)
