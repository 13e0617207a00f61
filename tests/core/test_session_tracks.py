"""Session tracks and summaries without a server: key ranges, parsing, the policy and the lifecycle hooks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from redispatterns._core import session as core
from redispatterns._core import session_tracks as tracks
from redispatterns._core.codec import default_codec
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import Batch, Command, Compute, Script
from redispatterns._core.scripts import load
from redispatterns.testing.replay import replay

TOK = "A" * 43


def cfg(**kw: Any) -> core.SessionConfig:
    opts: dict[str, Any] = {"keyspace": Keyspace("t:"), "codec": default_codec(), "idle_ms": 1000,
                            "lifetime_ms": 5000, "tracks": True}  # fmt: skip
    opts.update(kw)
    return core.SessionConfig(**opts)


def script(name: str) -> Any:
    return lambda op: isinstance(op, Script) and op.script.name == name


C = cfg()
SID = C.id_of(TOK)
H, EV, X = C.session_keys(SID)
TR = C.track_key(SID)


def member(track: bytes, us: int, seq: int, payload: bytes) -> bytes:
    return track + b"\x00" + b"%016d" % us + b"\x00" + b"%012d" % seq + b"\x00" + payload


def test_track_key_shares_the_session_slot() -> None:
    assert TR == H + ":tr" and slot(TR) == slot(H)


def test_append_track() -> None:
    add = Script(load("session_track_add"), keys=(H, TR), args=("calls", b'{"a":1}', 10))
    assert replay(tracks.append_track(C, TOK, "calls", {"a": 1}, 10), [(add, [3, b"1700000000000001"])]) == 3
    assert replay(tracks.append_track(C, TOK, "calls", 1, 10), [(Script, [0, 0])]) == 0
    assert replay(tracks.append_track(C, "bad", "calls", 1, 10), []) == 0
    for bad, exc in ((3, TypeError), ("", ValueError), ("a\x01", ValueError), ("x" * 201, ValueError)):
        with pytest.raises(exc):
            replay(tracks.append_track(C, TOK, bad, 1, 10), [])  # type: ignore[arg-type]


def test_track_ranges_and_parsing() -> None:
    rows = [member(b"calls", 1_700_000_000_000_000 + i, i, b'{"i":%d}' % i) for i in range(3)]
    whole = Command("ZRANGEBYLEX", TR, b"[calls\x00", b"(calls\x01", keys=(TR,))
    got = replay(
        tracks.track(C, TOK, "calls"),
        [(Batch((Command("EXISTS", H, keys=(H,)), whole), transaction=True), [1, rows])],
    )
    assert [e.event for e in got] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert got[0].time == pytest.approx(1_700_000_000.0)
    ranged = Command(
        "ZREVRANGEBYLEX",
        TR,
        b"(calls\x00" + b"%016d" % 21,
        b"[calls\x00" + b"%016d" % 10,
        "LIMIT",
        0,
        2,
        keys=(TR,),
    )
    got = replay(
        tracks.track(C, TOK, "calls", 10, 20, 2), [(lambda op: op.ops[1] == ranged, [1, rows[::-1][:2]])]
    )
    assert [e.event["i"] for e in got] == [1, 2]  # newest two, oldest first
    assert replay(tracks.track(C, TOK, "calls"), [(Batch, [0, rows])]) == []  # session gone
    assert replay(tracks.track(C, "bad", "calls"), []) == []
    with pytest.raises(ValueError, match="positive"):
        replay(tracks.track(C, TOK, "calls", limit=0), [])
    with pytest.raises(TypeError):
        replay(tracks.track(C, TOK, "calls", limit=True), [])
    with pytest.raises(ValueError, match="before since"):
        replay(tracks.track(C, TOK, "calls", 5, 4), [])


def test_time_arguments() -> None:
    assert tracks.time_us("since", None) is None
    assert tracks.time_us("since", 1.5) == 1_500_000
    assert tracks.time_us("since", datetime(1970, 1, 1, 0, 0, 2, tzinfo=timezone.utc)) == 2_000_000
    with pytest.raises(ValueError, match="aware"):
        tracks.time_us("since", datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        tracks.time_us("until", "now")
    with pytest.raises(TypeError):
        tracks.time_us("until", True)
    with pytest.raises(ValueError):
        tracks.time_us("until", -1)


def test_policy_and_counted_append() -> None:
    assert [tracks.due(n, 3) for n in (0, 1, 3, 4, 6)] == [False, False, True, False, True]
    assert tracks.due(5, None) is False
    counted = Script(load("session_event"), keys=(H, EV), args=(b'{"a":1}', 100, "1"))
    assert replay(tracks.append_counted(C, TOK, {"a": 1}), [(counted, [4, 9])]) == (4, 9)
    assert replay(tracks.append_counted(C, TOK, 1), [(Script, 0)]) == (0, 0)  # no session
    assert replay(tracks.append_counted(C, "bad", 1), []) == (0, 0)
    hooked = cfg(on_append=lambda sid, e: None)
    assert replay(tracks.append_counted(hooked, TOK, 1), [(Compute, None)]) == (0, 0)


def test_summarize_job_and_summary_read() -> None:
    def call(events: list[Any], key: str) -> Any:
        return {"n": len(events)}

    read = (Batch, [1, b"6", [b'"b"', b'"a"']])
    store = Script(load("session_summary_set"), keys=(H,), args=("k", b'{"n":2}', 2, 6))
    steps = [read, (Compute(call, (["a", "b"], "k")), {"n": 2}), (store, 1700000000123)]
    assert replay(tracks.summarize(C, TOK, "k", call), steps) is True
    assert replay(tracks.summarize(C, TOK, "k", call), [read, (Compute, {"n": 2}), (Script, 0)]) is False
    stale = [(Batch, [1, None, [b"1"]]), (Compute, 1), (lambda op: op.args[3] == 0, -1)]
    assert replay(tracks.summarize(C, TOK, "k", call), stale) is False
    assert replay(tracks.summarize(C, TOK, "k", call), [(Batch, [0, None, []])]) is False
    assert replay(tracks.summarize(C, "bad", "k", call), []) is False
    boom = RuntimeError("model down")
    with pytest.raises(RuntimeError):
        replay(tracks.summarize(C, TOK, "k", call), [read, (Compute, boom)])
    hm = Command("HMGET", H, "s:k", "st:k", keys=(H,))
    s = replay(tracks.summary(C, TOK, "k"), [(hm, [b'{"n":2}', b"1700000000123:2:6"])])
    assert s == tracks.SessionSummary({"n": 2}, 1700000000.123, 2)
    assert replay(tracks.summary(C, TOK, "k"), [(hm, [None, None])]) is None
    assert replay(tracks.summary(C, TOK, "k"), [(hm, ['"x"', None])]) == tracks.SessionSummary("x", 0.0, 0)
    assert replay(tracks.summary(C, "bad", "k"), []) is None
    with pytest.raises(TypeError):
        replay(tracks.summary(C, TOK, 3), [])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tracks.check_filter("k" * 201)


def test_lifecycle_hooks_delete_and_move_the_tracks() -> None:
    # destroy: unindex and delete the tracks in one round trip
    steps = [
        (script("session_destroy"), b"u"),
        (lambda op: isinstance(op, Batch) and op.ops[1] == Command("DEL", TR, keys=(TR,)), [1, 1]),
    ]
    assert replay(core.destroy(C, TOK), steps) is True
    # destroy_all: four commands per id
    steps2 = [
        (script("session_index_list"), [SID.encode(), b"1"]),
        (
            lambda op: isinstance(op, Batch) and len(op.ops) == 4 and op.ops[3].args == ("DEL", TR),
            [True, 1, 1, 1],
        ),
        (script("session_index_list"), []),
    ]
    assert replay(core.destroy_all(C, "u"), steps2) == 1
    # rotate: the old tracks move to the new id before the index swap
    taken = [[b"_u", b"u", b"_abs", b"9000", b"_i", b"1000", b"_c", b"1"], []]
    moved: list[Any] = []

    def move(op: Any) -> bool:
        moved.append(op)
        return isinstance(op, Batch) and op.ops[0].args[0] == "ZADD" and op.ops[2].args == ("DEL", TR)

    rotate = [
        (Command, [None, b"u"]),
        (script("session_index_add"), 1),
        (script("session_destroy"), taken),
        (script("session_create"), 1),
        (Command("ZRANGE", TR, 0, -1, keys=(TR,)), [b"m1", b"m2"]),
        (move, [2, 1, 1]),
        (script("session_index_swap"), 1),
    ]
    assert replay(core.rotate(C, TOK), rotate)
    assert moved[0].ops[0].args[2:] == (0, b"m1", 0, b"m2") and moved[0].ops[1].args[2] == 9000
    no_tracks = [*rotate[:4], (Command, []), rotate[6]]
    assert replay(core.rotate(C, TOK), no_tracks)
    # a rotation overtaken by destroy_all revokes the new id and deletes its tracks
    overtaken = [
        *no_tracks[:5],
        (script("session_index_swap"), 0),
        (script("session_destroy"), b"u"),
        (lambda op: isinstance(op, Command) and op.args[0] == "DEL", 1),
    ]
    assert replay(core.rotate(C, TOK), overtaken) is None
