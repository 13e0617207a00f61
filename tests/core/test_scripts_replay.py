"""The Lua registry's header contract, and the replay tool."""

from __future__ import annotations

from typing import Any

import pytest

from redispatterns._core.ops import Command, Flow, Now
from redispatterns._core.scripts import load, lua_dir, names, parse
from redispatterns.testing import ANY, ReplayMismatch, replay, trace


def test_every_script_has_a_valid_header() -> None:
    assert names(), "no scripts found"
    for name in names():
        s = load(name)
        assert s.name == name
        assert s.returns
        assert len(s.sha) == 40
        assert b"KEYS(" not in s.source.upper().replace(b" ", b""), f"{name} must not call KEYS"
        text = s.source.decode()
        assert "redis.call('KEYS'" not in text and 'redis.call("KEYS"' not in text


def test_header_parsing() -> None:
    src = (
        b"-- name: x\n-- summary: s\n-- KEYS[1]: a\n-- KEYS[2]: b\n-- ARGV[1]: n\n"
        b"-- returns: 1\n-- read-only: yes\nreturn 1\n"
    )
    s = parse("x", src)
    assert (s.num_keys, s.keys, s.argv, s.read_only) == (2, ("a", "b"), ("n",), True)
    assert parse("v", b"-- name: v\n-- summary: s\n-- KEYS[*]: many\n-- returns: r\n").num_keys == -1


@pytest.mark.parametrize(
    ("src", "msg"),
    [
        (b"-- name: other\n-- summary: s\n-- returns: r\n", "must start with"),
        (b"-- name: x\n-- returns: r\n", "summary"),
        (b"-- name: x\n-- summary: s\n-- KEYS[2]: b\n-- returns: r\n", "numbered"),
    ],
)
def test_bad_headers(src: bytes, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse("x", src)


def test_load_rejects_bad_and_missing_names() -> None:
    with pytest.raises(ValueError):
        load("../etc/passwd")
    with pytest.raises(FileNotFoundError):
        load("no_such_script")
    assert lua_dir().is_dir()


def _flow() -> Flow[Any]:
    a = yield Command("GET", "k")
    t = yield Now()
    return a, t


def test_replay_drives_a_flow() -> None:
    assert replay(_flow(), [(Command("GET", "k"), b"1"), (Now, 5.0)]) == (b"1", 5.0)
    assert replay(_flow(), [(ANY, b"1"), (lambda op: isinstance(op, Now), 1.0)]) == (b"1", 1.0)


def test_replay_reports_mismatches() -> None:
    with pytest.raises(ReplayMismatch, match="expected"):
        replay(_flow(), [(Command("GET", "other"), b"1")])
    with pytest.raises(ReplayMismatch, match="beyond the script"):
        replay(_flow(), [(ANY, b"1")])
    with pytest.raises(ReplayMismatch, match="finished after"):
        replay(_flow(), [(ANY, b"1"), (ANY, 1.0), (ANY, 2)])
    with pytest.raises(KeyError):
        replay(_flow(), [(ANY, KeyError("boom"))])


def test_trace_records_ops() -> None:
    ops, result = trace(_flow(), lambda op: 1)
    assert [type(o).__name__ for o in ops] == ["Command", "Now"]
    assert result == (1, 1)
    assert repr(ANY) == "ANY"
