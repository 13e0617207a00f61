"""Stream flows and worker-loop decisions, driven with canned replies (no server)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from redispatterns._core import stream_consumer as worker
from redispatterns._core import streams as core
from redispatterns._core.codec import JsonCodec, as_str
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import (
    NOT_RUN,
    Arg,
    Batch,
    Command,
    Compute,
    ComputeEach,
    Now,
    Script,
    Sleep,
    WallClock,
)
from redispatterns._core.stream_consumer import Backoff, BaseMessage, ConsumerConfig, ConsumerState
from redispatterns._core.streams import StreamSpec
from redispatterns.errors import DecodeError, StreamError
from redispatterns.testing.replay import ANY, replay, trace

CODEC = JsonCodec()
SPEC = StreamSpec("jobs", Keyspace("t:"))
KEY = "t:stream:{jobs}"
DLQ = "t:stream:{jobs}:dlq"


class Transient(Exception):
    pass


def K(*args: Any) -> Command:
    return Command(*args, keys=(KEY,))


def cfg(**kw: Any) -> ConsumerConfig:
    base: dict[str, Any] = {
        "group": "g", "name": "w", "count": 10, "block": 1.0, "min_idle": 2.0,
        "reclaim_interval": 5.0, "max_deliveries": 3, "transient": (Transient,),
    }  # fmt: skip
    base.update(kw)
    return ConsumerConfig(**base)


def script_named(name: str) -> Any:
    return lambda op: isinstance(op, Script) and op.script.name == name


def claim_reply(cursor: str = "0-0", rows: Any = (), gone: Any = (), dead: Any = ()) -> list[Any]:
    return [cursor, [list(r) for r in rows], list(gone), [list(d) for d in dead]]


# --------------------------------------------------------------------------- pure helpers


def test_keys_share_the_stream_hash_tag() -> None:
    assert (SPEC.key, SPEC.dlq) == (KEY, DLQ)
    assert SPEC.marker("order:1") == "t:stream:{jobs}:idem:order:1"
    assert len({slot(SPEC.key), slot(SPEC.dlq), slot(SPEC.marker("x"))}) == 1


def test_trim_args() -> None:
    assert core.trim_args(None, None, True) == ()
    assert core.trim_args(100, None, True) == ("MAXLEN", "~", 100)
    assert core.trim_args(None, "5-0", False) == ("MINID", "=", "5-0")
    with pytest.raises(ValueError):
        core.trim_args(1, "1-0", True)
    with pytest.raises(ValueError):
        core.trim_args(0, None, True)
    with pytest.raises(TypeError):
        core.trim_args(True, None, True)
    with pytest.raises(TypeError):
        core.trim_args(None, "", True)


def test_encode_fields() -> None:
    assert core.encode_fields({"a": 1, "b": b"x"}, CODEC) == ["a", b"1", "b", b"\xffx"]
    with pytest.raises(TypeError):
        core.encode_fields([("a", 1)], CODEC)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        core.encode_fields({}, CODEC)
    with pytest.raises(TypeError):
        core.encode_fields({1: 1}, CODEC)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved"):
        core.encode_fields({"rp:x": 1}, CODEC)
    with pytest.raises(ValueError):
        core.encode_fields({"": 1}, CODEC)
    with pytest.raises(TypeError, match="type int as JSON"):  # the codec's message, not orjson's
        core.encode_fields({"n": 2**70}, CODEC)


def test_block_cap_stays_below_the_socket_timeout() -> None:
    assert worker.block_cap(None) == 30.0
    assert worker.block_cap(0) == 30.0
    assert worker.block_cap(5.0) == 4.0
    assert worker.block_cap(0.5) == 0.25
    assert worker.block_cap(0.1) == 0.005


def test_backoff_grows_and_caps() -> None:
    values = [worker.error_backoff(n) for n in range(1, 10)]
    assert values == sorted(values) and values[0] == 0.05 and values[-1] == 2.0


def test_settle_decision() -> None:
    c = cfg(max_deliveries=3)
    assert [worker.settle(c, n) for n in (1, 2, 3, 4)] == ["retry", "retry", "dead", "dead"]
    assert worker.settle(cfg(max_deliveries=0), 99) == "retry"


def test_message_decodes_lazily() -> None:
    m = BaseMessage(b"1-0", {b"a": b"[1,2]", b"b": b"\xffraw"}, 2, CODEC)
    assert m.id == "1-0" and m.delivery_count == 2 and not m.settled
    assert m.fields == {"a": [1, 2], "b": b"raw"} and m["a"] == [1, 2]
    assert "1-0" in repr(m) and "deliveries=2" in repr(m)
    bad = BaseMessage("2-0", {"a": "not json"}, 1, CODEC)
    with pytest.raises(DecodeError):
        _ = bad.fields


@pytest.mark.parametrize(
    "raw",
    [
        {b"a": b"[1,2]", b"b": b'"x"', b"c": b"null"},  # JSON values: orjson's one pass
        {b"a": b"1", b"b": b"\xffraw"},  # a bytes value (marked): the codec's own path
        {"a": "1", "b": '"x"'},  # a client that decodes replies: text names and values
        {b"\xfe\xffname": b"2"},  # a field name that is not UTF-8
    ],
)
def test_fields_decode_as_the_codec_does(raw: dict[Any, Any]) -> None:
    expected = {as_str(k): CODEC.decode(v) for k, v in raw.items()}
    assert worker.decode_fields(raw, CODEC) == expected
    m = BaseMessage(b"1-0", raw, 1, CODEC)
    assert m.fields == expected and m.fields is m.fields  # decoded once


def test_fields_decode_errors_and_other_codecs() -> None:
    for bad in ({b"a": b"\xfe" + b"pickled"}, {b"a": b"not json"}):
        with pytest.raises(DecodeError):
            worker.decode_fields(bad, CODEC)
        with pytest.raises(DecodeError):
            _ = BaseMessage(b"1-0", bad, 1, CODEC).fields

    class Upper:
        def encode(self, value: Any) -> bytes:
            return str(value).encode()

        def decode(self, data: bytes | str) -> Any:
            return as_str(data).upper()

    assert worker.decode_fields({b"a": b"1"}, Upper()) == {"a": "1"}  # not orjson's 1
    assert BaseMessage(b"1-0", {b"a": b"x"}, 1, Upper()).fields == {"a": "X"}


# --------------------------------------------------------------------------- producer flows


def test_add_plain_and_idempotent() -> None:
    spec = StreamSpec("jobs", Keyspace("t:"), ("MAXLEN", "~", 10))
    out = replay(core.add(spec, ["a", b"1"]), [(K("XADD", KEY, "MAXLEN", "~", 10, "*", "a", b"1"), b"1-0")])
    assert out == "1-0"
    steps = [(script_named("stream_add"), [b"1-0", 0])]
    assert replay(core.add(spec, ["a", b"1"], idempotency_key="k", ttl_ms=5), steps) == "1-0"
    ops, _ = trace(core.add(SPEC, ["a", b"1"], idempotency_key="k", ttl_ms=5), lambda op: ["2-0", 1])
    assert isinstance(ops[0], Script)
    assert ops[0].keys == (KEY, SPEC.marker("k")) and ops[0].args == (5, "", "", "", "a", b"1")


def test_add_by_age_uses_minid() -> None:
    spec = StreamSpec("jobs", Keyspace("t:"), (), max_age_ms=1000)
    ops, out = trace(core.add(spec, ["a", b"1"]), lambda op: 10.0 if isinstance(op, WallClock) else b"3-0")
    assert out == "3-0" and ops[1] == K("XADD", KEY, "MINID", "~", "9000-0", "*", "a", b"1")


def test_add_many() -> None:
    assert replay(core.add_many(SPEC, []), []) == []
    ops, out = trace(core.add_many(SPEC, [["a", b"1"], ["a", b"2", "b", b"3"]]), lambda op: [b"1-0", b"1-1"])
    assert out == ["1-0", "1-1"] and len(ops) == 1 and isinstance(ops[0], Script)
    assert ops[0].script.name == "stream_add_many" and ops[0].keys == (KEY,)
    # no trim, 2 entries, their field counts, then every field and value in order
    assert ops[0].args == ("", "", "", 2, 2, 4, "a", b"1", "a", b"2", "b", b"3")


def test_add_many_cuts_large_batches_into_scripts_in_one_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "ADD_MANY_CHUNK", 2)
    spec = StreamSpec("jobs", Keyspace("t:"), ("MAXLEN", "~", 10))
    payloads: list[list[Arg]] = [["n", str(i).encode()] for i in range(5)]
    seq = iter(range(100))

    def reply(op: object) -> object:  # each script call answers one id per entry it carries
        assert isinstance(op, Batch)
        return [[f"1-{next(seq)}".encode() for _ in range(int(cast(Script, s).args[3]))] for s in op.ops]

    ops, out = trace(core.add_many(spec, payloads), reply)
    scripts = [cast(Script, s) for s in cast(Batch, ops[0]).ops]
    assert len(ops) == 1 and [s.args[3] for s in scripts] == [2, 2, 1]
    assert all(s.args[:3] == ("MAXLEN", "~", 10) for s in scripts)
    assert scripts[2].args[4:] == (2, "n", b"4")
    assert out == [f"1-{i}" for i in range(5)]


def test_length_delete() -> None:
    assert replay(core.length(SPEC), [(Command("XLEN", KEY), 4)]) == 4
    keys = (KEY, DLQ, SPEC.delayed, SPEC.delayed_seq)
    assert replay(core.delete(SPEC), [(Command("DEL", *keys, keys=keys), 2)]) == 2


def test_metrics_parse() -> None:
    reply = [7, 1, 3, 4, b"1000-0", 1500, 3000, 1, 2, b"1000-2"]
    m = replay(core.metrics(SPEC, "g"), [(script_named("stream_metrics"), reply)])
    assert (m.length, m.group_exists, m.pending, m.lag, m.dead_letters, m.consumers) == (7, True, 3, 4, 1, 2)
    assert (m.oldest_pending_id, m.oldest_pending_age, m.oldest_pending_idle) == ("1000-0", 2.0, 1.5)
    assert m.last_delivered_id == "1000-2"
    none = replay(core.metrics(SPEC, "g"), [(ANY, [0, 0, 0, -1, b"", 0, 5, 0, 0, b""])])
    assert none.lag is None and none.oldest_pending_id is None and none.last_delivered_id is None


def test_dead_letters_parse() -> None:
    raw = {b"rp:id": b"1-0", b"rp:group": b"g", b"rp:consumer": b"w", b"rp:deliveries": b"3",
           b"rp:error": b"boom", b"rp:dead_us": b"2000000", b"n": b"4", b"odd": b"not json"}  # fmt: skip
    rows = [(b"9-0", raw), (b"9-1", {b"rp:id": b"2-0", b"rp:missing": b"1"})]
    out = replay(core.dead_letters(SPEC, CODEC, 10), [(Command("XRANGE", DLQ, "-", "+", "COUNT", 10), rows)])
    d = out[0]
    assert (d.dlq_id, d.id, d.group, d.consumer, d.deliveries, d.error, d.dead_at) == (
        "9-0", "1-0", "g", "w", 3, "boom", 2.0
    )  # fmt: skip
    assert d.fields == {"n": 4, "odd": b"not json"} and not d.missing
    assert out[1].missing and out[1].deliveries == 0
    assert replay(core.dead_letters(SPEC, CODEC, 1), [(ANY, None)]) == []


# --------------------------------------------------------------------------- consumer flows


def test_ensure_group_is_idempotent() -> None:
    c, st = cfg(), ConsumerState()
    create = K("XGROUP", "CREATE", KEY, "g", "0", "MKSTREAM")
    assert replay(worker.ensure_group(SPEC, c, st), [(create, b"OK")]) is True and st.group_ready
    assert replay(worker.ensure_group(SPEC, c, st), []) is False
    busy = Exception("BUSYGROUP Consumer Group name already exists")
    assert replay(worker.ensure_group(SPEC, c, ConsumerState()), [(create, busy)]) is False
    with pytest.raises(Exception, match="WRONGTYPE"):
        replay(worker.ensure_group(SPEC, c), [(create, Exception("WRONGTYPE"))])


def test_ack_nack_dead_letter() -> None:
    assert replay(worker.ack(SPEC, "g", []), []) == 0
    assert replay(worker.ack(SPEC, "g", ["1-0"]), [(K("XACK", KEY, "g", "1-0"), 1)]) == 1
    assert replay(worker.nack(SPEC, cfg(), []), []) == 0
    ops, n = trace(worker.nack(SPEC, cfg(min_idle=2.0), ["1-0"], delay=0.5), lambda op: 1)
    assert n == 1 and ops[0].args == ("g", "w", 1500, "1-0")  # type: ignore[union-attr]
    ops, _ = trace(worker.nack(SPEC, cfg(), ["1-0"], delay=-1), lambda op: 1)
    assert ops[0].args[2] == 86_400_000  # type: ignore[union-attr]
    ops, n = trace(worker.dead_letter(SPEC, cfg(delete_dead=True), "1-0", "x" * 5000, "w"), lambda op: 3)
    assert n == 3 and ops[0].keys == (KEY, DLQ)  # type: ignore[union-attr]
    args = ops[0].args  # type: ignore[union-attr]
    assert args[0:3] == ("g", "1-0", "w") and len(str(args[3])) == 2000 and args[5] == 1


def test_next_batch_recovers_own_pending_first() -> None:
    st = ConsumerState(group_ready=True, next_promote=1e9)
    rows = [("1-0", 2, ["a", b"1"])]
    steps: list[Any] = [(script_named("stream_claim"), claim_reply("1-0", rows))]
    d = replay(worker.next_batch(SPEC, cfg(), st), steps)
    assert d.entries == [("1-0", {"a": b"1"})] and d.counts == [2] and d.count_of(0) == 2
    assert (st.recovering, st.own_cursor, st.stats.recovered) == (True, "1-0", 1)
    # the pass ends: recovery is over, the reclaim timer is due, then a blocking read
    read = K("XREADGROUP", "GROUP", "g", "w", "COUNT", 10, "BLOCK", 1000, "STREAMS", KEY, ">")
    steps = [
        (lambda op: isinstance(op, Script) and op.args[2] == "own" and op.args[4] == "1-0", claim_reply()),
        (Now(), 100.0),
        (
            lambda op: isinstance(op, Script) and op.args[2] == "idle",
            claim_reply(gone=["0-1"], dead=[("0-2", 3)]),
        ),
        (read, [[KEY, [("5-0", {"a": b"2"})]]]),
    ]
    d = replay(worker.next_batch(SPEC, cfg(), st), steps)
    assert d.entries == [("5-0", {"a": b"2"})] and d.counts is None
    assert not st.recovering and st.next_reclaim == 105.0
    assert (st.stats.gone, st.stats.dead_lettered, st.stats.delivered) == (1, 1, 2)


def test_next_batch_returns_reclaimed_entries_and_follows_the_cursor() -> None:
    st = ConsumerState(group_ready=True, recovering=False)
    steps = [(Now(), 10.0), (script_named("stream_claim"), claim_reply("7-0", [("3-0", 2, ["a", b"1"])]))]
    d = replay(worker.next_batch(SPEC, cfg(), st), steps)
    assert d.counts == [2] and st.reclaim_cursor == "7-0" and st.next_reclaim == 0.0
    assert st.stats.reclaimed == 1


def test_next_batch_slices_long_blocks_and_pipelines_acks() -> None:
    st = ConsumerState(
        group_ready=True, recovering=False, next_reclaim=1e9, acks=["1-0", "1-1"], next_promote=1e9
    )
    c = cfg(block=10.0, block_cap=4.0)
    seen: list[Any] = []
    clock = iter([0.0, 4.0, 8.0, 10.0])

    def respond(op: Any) -> Any:
        seen.append(op)
        if isinstance(op, Now):
            return next(clock)
        if isinstance(op, Batch):
            return [2, None]
        return None

    ops, d = trace(worker.next_batch(SPEC, c, st), respond)
    reads = [op for op in ops if isinstance(op, Command) and op.name == "XREADGROUP"]
    batch = [op for op in ops if isinstance(op, Batch)]
    assert d.entries == [] and st.acks == [] and st.stats.acked == 2
    assert len(batch) == 1 and batch[0].ops[0].args == ("XACK", KEY, "g", "1-0", "1-1")
    blocks = [batch[0].ops[1].args[7]] + [r.args[7] for r in reads]
    assert blocks == [4000, 4000, 2000]


def test_next_batch_without_block_reads_once() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, next_promote=1e9)
    read = K("XREADGROUP", "GROUP", "g", "w", "COUNT", 3, "STREAMS", KEY, ">")
    d = replay(
        worker.next_batch(SPEC, cfg(), st, count=3, block=0),
        [(Now(), 1.0), (read, [[KEY, []]]), (Now(), 1.0)],
    )
    assert d.entries == []


def test_settle_batch_acks_retries_and_dead_letters(caplog: pytest.LogCaptureFixture) -> None:
    st = ConsumerState()
    msgs = [BaseMessage(f"{i}-0", {}, n, CODEC) for i, n in enumerate((1, 1, 2, 3, 1))]
    msgs[1].settled = True  # the handler acked it itself
    outcomes = [None, None, ValueError("x"), ValueError("boom"), NOT_RUN]
    hooked: list[Any] = []
    steps = [
        (Compute, None),  # on_error for 2-0
        (Compute, None),  # on_error for 3-0
        (
            lambda op: (
                isinstance(op, Script) and op.script.name == "stream_dead_letter" and op.args[1] == "3-0"
            ),
            3,
        ),
        (
            lambda op: (
                isinstance(op, Script) and op.script.name == "stream_nack" and op.args[2:] == (2000, "2-0")
            ),
            1,
        ),
        (lambda op: isinstance(op, Script) and op.args[2:] == (86_400_000, "4-0"), 1),  # released
    ]
    with caplog.at_level("WARNING", logger="redispatterns.streams"):
        ops, ran = trace(
            worker.settle_batch(
                SPEC, cfg(max_deliveries=3), st, msgs, outcomes, lambda e, m: hooked.append(m)
            ),
            lambda op: replay_step(steps, op),
        )
    assert ran == 4 and st.acks == ["0-0"] and all(m.settled for m in msgs)
    assert [op.args[1].id for op in ops if isinstance(op, Compute)] == ["2-0", "3-0"]  # (exc, message)
    assert (st.stats.failed, st.stats.retried, st.stats.dead_lettered, st.stats.released) == (2, 1, 1, 1)
    failed = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert "2-0" in failed[0].getMessage() and "delivery 2 of 3" in failed[0].getMessage()
    assert "delivery 3 of 3" in failed[1].getMessage() and failed[0].exc_info is not None
    dead = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(dead) == 1 and "3-0" in dead[0].getMessage() and dead[0].levelname == "ERROR"
    # a dead-letter that finds the entry gone (another consumer took it) counts nothing
    st2 = ConsumerState()
    m2 = [BaseMessage("9-0", {}, 5, CODEC)]
    replay(
        worker.settle_batch(SPEC, cfg(), st2, m2, [ValueError("x")]),
        [(script_named("stream_dead_letter"), 0)],
    )
    assert st2.stats.dead_lettered == 0
    # all returned: every message the loop still owns is acked, no round trip
    st3 = ConsumerState()
    m3 = [BaseMessage("1-0", {}, 1, CODEC), BaseMessage("1-1", {}, 1, CODEC)]
    m3[0].settled = True
    assert replay(worker.settle_batch(SPEC, cfg(), st3, m3, [None, None]), []) == 2 and st3.acks == ["1-1"]


def replay_step(steps: list[Any], op: Any) -> Any:
    """The reply of the first step matching ``op`` (each step is used once)."""
    from redispatterns.testing.replay import _matches

    for i, (expected, reply) in enumerate(steps):
        if _matches(expected, op):
            del steps[i]
            return reply
    raise AssertionError(f"unexpected {op!r}")


def test_a_failing_on_error_hook_is_logged_and_the_entry_still_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    st = ConsumerState()
    msgs = [BaseMessage("1-0", {}, 1, CODEC)]
    steps = [(Compute, RuntimeError("hook broke")), (script_named("stream_nack"), 1)]
    with caplog.at_level("WARNING", logger="redispatterns.streams"):
        replay(worker.settle_batch(SPEC, cfg(), st, msgs, [ValueError("x")], lambda e, m: None), steps)
    assert st.stats.retried == 1
    assert any("on_error hook failed" in r.getMessage() for r in caplog.records)


def test_backoff_policies() -> None:
    fixed = Backoff.fixed(2.0)
    assert [fixed.delay(n) for n in (1, 2, 9)] == [2.0, 2.0, 2.0]
    exp = Backoff.exponential(0.5, 3.0, jitter=0)
    assert [exp.delay(n) for n in (1, 2, 3, 4, 5, 500)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    jittered = Backoff.exponential(1.0, 8.0, jitter=0.5)
    draws = [jittered.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in draws) and len(set(draws)) > 100
    assert Backoff().delay(3) == 0.0
    with pytest.raises(ValueError, match="factor"):
        Backoff(1.0, 0.5, 2.0)
    with pytest.raises(ValueError, match="at least its first"):
        Backoff.exponential(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff.exponential(1.0, 2.0, jitter=1.5)
    with pytest.raises(ValueError):
        Backoff.fixed(-1)


def test_nack_each_groups_equal_delays_in_one_round_trip() -> None:
    c = cfg(min_idle=2.0)
    ops, n = trace(worker.nack_each(SPEC, c, {"1-0": 0.5, "1-1": 0.5}), lambda op: 2)
    assert n == 2 and isinstance(ops[0], Script) and ops[0].args == ("g", "w", 1500, "1-0", "1-1")
    ops, n = trace(worker.nack_each(SPEC, c, {"1-0": 0.5, "1-1": 1.0}), lambda op: [1, 1])
    assert n == 2 and len(ops) == 1 and isinstance(ops[0], Batch) and len(ops[0].ops) == 2
    assert replay(worker.nack_each(SPEC, c, {}), []) == 0


def _run_each(op: ComputeEach) -> list[Any]:
    out: list[Any] = []
    for item in op.items:
        if op.stop:
            out.append(NOT_RUN)
            continue
        try:
            op.fn(item)
            out.append(None)
        except Exception as exc:
            out.append(exc)
    return out


def _responder(deliveries: list[Any], *, fail_first: bool = False) -> Any:
    state = {"failed": not fail_first, "t": 0.0}

    def one(op: Any) -> Any:
        if isinstance(op, Script):
            return {"stream_claim": claim_reply(), "stream_promote": [0, -1]}.get(op.script.name, 1)
        if op.name == "XACK":
            return len(op.args) - 3
        rows = deliveries.pop(0) if deliveries else []
        return [[KEY, rows]] if rows else None

    def respond(op: Any) -> Any:
        if isinstance(op, Now | Sleep):
            state["t"] += 0.5
            return state["t"]
        if isinstance(op, Compute):
            return op.fn(*op.args)
        if isinstance(op, ComputeEach):
            return _run_each(op)
        if isinstance(op, Command) and op.name == "XGROUP":
            return b"OK"
        if isinstance(op, Batch) or (isinstance(op, Command) and op.name == "XREADGROUP"):
            if not state["failed"]:
                state["failed"] = True
                return Transient("connection lost")
            return [one(o) for o in op.ops] if isinstance(op, Batch) else one(op)
        if isinstance(op, Command | Script):
            return one(op)
        raise AssertionError(op)

    return respond


def _wrap(d: Any) -> list[BaseMessage]:
    return [BaseMessage(m, f, d.count_of(i), CODEC) for i, (m, f) in enumerate(d.entries)]


def test_work_loop_handles_acks_failures_and_idle_exit() -> None:
    st = ConsumerState()
    c = cfg(reclaim_interval=100.0)
    batches = [[("1-0", {"a": b"1"}), ("1-1", {"a": b"2"})], [("2-0", {"a": b"3"})]]
    seen: list[str] = []
    ops, stats = trace(
        worker.work(SPEC, c, st, lambda m: seen.append(m.id), _wrap, until_idle=1.0),
        _responder(batches, fail_first=True),
    )
    assert seen == ["1-0", "1-1", "2-0"]
    assert stats.read_errors == 1 and any(isinstance(op, Sleep) for op in ops)
    assert stats.delivered == 3 and stats.acked == 3 and st.acks == []
    acks = [op for op in ops if isinstance(op, Batch) and op.ops[0].args[0] == "XACK"]
    assert len(acks) == 2  # each batch's acks rode with the next read
    each = [op for op in ops if isinstance(op, ComputeEach)]
    assert [(op.concurrency, op.key) for op in each] == [(1, None), (1, None)]


def test_work_loop_passes_concurrency_and_ordering_key_to_the_runner() -> None:
    st = ConsumerState()
    key = worker.field_key("user")
    ops, _ = trace(
        worker.work(SPEC, cfg(concurrency=8), st, lambda m: None, _wrap, key=key, max_messages=1),
        _responder([[("1-0", {b"user": b"7"})]]),
    )
    (each,) = [op for op in ops if isinstance(op, ComputeEach)]
    assert each.concurrency == 8 and each.key is key and each.stop is st.stop_flag and not each.stop
    m = BaseMessage("1-0", {b"user": b"7"}, 1, CODEC)
    assert key(m) == b"7" and key(BaseMessage("1-1", {"user": "7"}, 1, CODEC)) == "7"
    assert key(BaseMessage("1-2", {}, 1, CODEC)) is None


def test_work_loop_stops_at_max_messages_and_releases_unhandled() -> None:
    st = ConsumerState()
    batches: list[Any] = [[("1-0", {}), ("1-1", {}), ("1-2", {})]]

    def handler(m: Any) -> None:
        st.stopping = True  # a stop() arrives during the first message

    ops, stats = trace(worker.work(SPEC, cfg(), st, handler, _wrap), _responder(batches))
    release = [op for op in ops if isinstance(op, Script) and op.script.name == "stream_nack"]
    assert release[0].args[3:] == ("1-1", "1-2") and stats.released == 1  # the canned reply says 1
    assert stats.acked == 1

    st2 = ConsumerState()
    _, stats2 = trace(
        worker.work(SPEC, cfg(), st2, lambda m: None, _wrap, max_messages=2),
        _responder([[("1-0", {}), ("1-1", {})]]),
    )
    assert stats2.acked == 2


def test_reclaim_now() -> None:
    st = ConsumerState(group_ready=True)
    d = replay(
        worker.reclaim(SPEC, cfg(), st), [(script_named("stream_claim"), claim_reply(rows=[("1-0", 4, [])]))]
    )
    assert d.counts == [4] and st.stats.reclaimed == 1
    steps: list[Any] = [
        (lambda op: op.args[4] == "0-0", claim_reply("5-0", gone=["1-0"])),
        (lambda op: op.args[4] == "5-0", claim_reply("0-0", gone=["6-0"])),
    ]
    d = replay(worker.reclaim(SPEC, cfg(), st), steps)
    assert d.entries == [] and st.stats.gone == 2


def test_flush_without_acks_sends_nothing() -> None:
    assert replay(worker.flush(SPEC, cfg(), ConsumerState()), []) == 0


def test_a_vanished_group_is_a_stream_error_and_is_created_again() -> None:
    nogroup = Exception("NOGROUP No such key 't:stream:{jobs}' or consumer group 'g'")
    st = ConsumerState(group_ready=True)
    with pytest.raises(StreamError, match="does not exist"):
        replay(worker.next_batch(SPEC, cfg(), st), [(script_named("stream_claim"), nogroup)])
    assert not st.group_ready
    st = ConsumerState(group_ready=True, recovering=False)
    with pytest.raises(StreamError):
        replay(worker.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (script_named("stream_claim"), nogroup)])
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, next_promote=1e9)
    with pytest.raises(StreamError):
        replay(worker.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (ANY, nogroup)])
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, next_promote=1e9)
    with pytest.raises(Exception, match="WRONGTYPE"):
        replay(worker.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (ANY, Exception("WRONGTYPE"))])


def test_work_loop_recreates_a_vanished_group() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, next_promote=1e9)
    calls = {"n": 0}

    def respond(op: Any) -> Any:
        if isinstance(op, Now | Sleep):
            calls["n"] += 1
            return float(calls["n"])
        if isinstance(op, Command) and op.name == "XREADGROUP" and calls["n"] < 3:
            return Exception("NOGROUP gone")
        if isinstance(op, Command) and op.name == "XGROUP":
            return b"OK"
        return None

    ops, stats = trace(worker.work(SPEC, cfg(), st, lambda m: None, _wrap, until_idle=0.5), respond)
    assert stats.read_errors == 1 and any(isinstance(op, Sleep) for op in ops)
    assert any(isinstance(op, Command) and op.name == "XGROUP" for op in ops) and st.group_ready


def test_prune_consumers() -> None:
    st_cfg = cfg()
    ops, names = trace(
        worker.prune_consumers(SPEC, st_cfg, 1.5), lambda op: b"OK" if isinstance(op, Command) else [b"old"]
    )
    assert names == ["old"] and ops[1].args == ("g", 1500, "w")  # type: ignore[union-attr]


def test_trim_acked() -> None:
    ops, n = trace(core.trim_acked(SPEC, approximate=False), lambda op: 3)
    assert n == 3 and ops[0].args == ("=",)  # type: ignore[union-attr]


def test_claims_send_the_queued_acks_first() -> None:
    st = ConsumerState(group_ready=True, acks=["1-0"])

    def acks_then_claim(op: Any) -> bool:  # one round trip: the XACK, then the claim script
        return (
            isinstance(op, Batch)
            and op.ops[0] == K("XACK", KEY, "g", "1-0")
            and isinstance(op.ops[1], Script)
            and op.ops[1].script.name == "stream_claim"
        )

    steps: list[Any] = [(acks_then_claim, [1, claim_reply()])]
    res = replay(worker.claim(SPEC, cfg(), "own", "0-0", st), steps)
    assert res.cursor == "0-0" and st.acks == [] and st.stats.acked == 1


# --------------------------------------------------------------------------- delayed entries


def test_delayed_keys_share_the_hash_tag_and_fields_pack_for_lua() -> None:
    assert SPEC.delayed == "t:stream:{jobs}:delayed" and SPEC.delayed_seq == "t:stream:{jobs}:delayed:seq"
    assert len({slot(SPEC.key), slot(SPEC.delayed), slot(SPEC.delayed_seq)}) == 1
    assert core.pack_fields(["a", b"1:2", "bb", b"", "n", 7]) == b"1:a3:1:22:bb0:1:n1:7"


def test_add_delayed() -> None:
    ops, out = trace(core.add_delayed(SPEC, ["a", b"1"], delay_ms=1500), lambda op: [b"delayed-4", 1])
    assert out == "delayed-4" and isinstance(ops[0], Script) and ops[0].script.name == "stream_add_delayed"
    assert ops[0].keys == (SPEC.delayed, SPEC.delayed_seq) and ops[0].args == (
        1500,
        -1,
        86_400_000,
        b"1:a1:1",
    )
    steps = [(lambda op: op.keys[2] == SPEC.marker("k") and op.args[:3] == (-1, 99, 5), [b"delayed-1", 0])]
    assert (
        replay(core.add_delayed(SPEC, ["a", b"1"], due_ms=99, idempotency_key="k", ttl_ms=5), steps)
        == "delayed-1"
    )
    with pytest.raises(ValueError):
        replay(core.add_delayed(SPEC, ["a", b"1"]), [])
    with pytest.raises(ValueError):
        replay(core.add_delayed(SPEC, ["a", b"1"], delay_ms=1, due_ms=1), [])


def _promote_then_read(op: Any) -> bool:
    return (
        isinstance(op, Batch)
        and isinstance(op.ops[0], Script)
        and op.ops[0].script.name == "stream_promote"
        and op.ops[0].keys == (KEY, SPEC.delayed)
        and op.ops[1].args[0] == "XREADGROUP"
    )


def test_reads_move_due_delayed_entries_in_the_same_round_trip_and_wait_for_the_next_one() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)
    c = cfg(block=10.0, block_cap=4.0, delayed_poll=1.0)
    # 2 moved, the next one due in 300 ms: the following read blocks at most until then
    steps: list[Any] = [
        (Now(), 100.0),
        (_promote_then_read, [[2, 300], None]),
        (Now(), 100.1),
        (lambda op: isinstance(op, Command) and op.args[7] == 200, None),  # 100.4 - 100.1 = 0.2 s
        (Now(), 100.4),
        (_promote_then_read, [[0, -1], [[KEY, [("5-0", {"a": b"1"})]]]]),
    ]
    d = replay(worker.next_batch(SPEC, c, st), steps)
    assert d.entries == [("5-0", {"a": b"1"})] and st.stats.promoted == 2
    assert st.next_promote == 101.4  # nothing left: look again after delayed_poll
    # with trimming by age, the move trims like an add
    aged = StreamSpec("jobs", Keyspace("t:"), (), max_age_ms=1000)
    st2 = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)

    def respond(op: Any) -> Any:
        if isinstance(op, WallClock):
            return 10.0
        return 0.0 if isinstance(op, Now) else [[1, 0], [[KEY, [("6-0", {})]]]]

    ops, _ = trace(worker.next_batch(aged, cfg(), st2), respond)
    batch = next(op for op in ops if isinstance(op, Batch))
    assert batch.ops[0].args == (worker.PROMOTE_BATCH, "MINID", "~", "9000-0")
    assert st2.next_promote == 0.0  # more were due: look again at once


def test_acks_promote_and_read_share_one_round_trip() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, acks=["1-0"])
    steps: list[Any] = [
        (Now(), 0.0),
        (lambda op: isinstance(op, Batch) and [o.args[0] for o in op.ops[::2]] == ["XACK", "XREADGROUP"],
         [1, [0, -1], [[KEY, [("2-0", {})]]]]),
    ]  # fmt: skip
    d = replay(worker.next_batch(SPEC, cfg(), st), steps)
    assert len(d.entries) == 1 and st.acks == [] and st.stats.acked == 1


def test_claimed_dead_letters_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    st = ConsumerState(group_ready=True)
    with caplog.at_level("ERROR", logger="redispatterns.streams"):
        res = replay(
            worker.claim(SPEC, cfg(), "idle", "0-0", st), [(ANY, claim_reply(dead=[("1-0", 3), ("1-1", 4)]))]
        )
    assert res.dead == (("1-0", 3), ("1-1", 4))
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and "1-0" in msgs[0] and "after 3 deliveries" in msgs[0] and "1-1" in msgs[1]
