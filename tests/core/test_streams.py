"""Stream flows and worker-loop decisions, driven with canned replies (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from redispatterns._core import streams as core
from redispatterns._core.codec import JsonCodec
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import Batch, Command, Compute, Now, Script, Sleep, WallClock
from redispatterns._core.streams import (
    BaseMessage,
    BatchResult,
    ConsumerConfig,
    ConsumerState,
    Delivery,
    StreamSpec,
)
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


def claim_reply(cursor: str = "0-0", rows: Any = (), gone: Any = (), dead: int = 0) -> list[Any]:
    return [cursor, [list(r) for r in rows], list(gone), dead]


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


def test_block_cap_stays_below_the_socket_timeout() -> None:
    assert core.block_cap(None) == 30.0
    assert core.block_cap(0) == 30.0
    assert core.block_cap(5.0) == 4.0
    assert core.block_cap(0.5) == 0.25
    assert core.block_cap(0.1) == 0.005


def test_backoff_grows_and_caps() -> None:
    values = [core.backoff(n) for n in range(1, 10)]
    assert values == sorted(values) and values[0] == 0.05 and values[-1] == 2.0


def test_settle_decision() -> None:
    c = cfg(max_deliveries=3)
    assert [core.settle(c, n) for n in (1, 2, 3, 4)] == ["retry", "retry", "dead", "dead"]
    assert core.settle(cfg(max_deliveries=0), 99) == "retry"


def test_message_decodes_lazily() -> None:
    m = BaseMessage(b"1-0", {b"a": b"[1,2]", b"b": b"\xffraw"}, 2, CODEC)
    assert m.id == "1-0" and m.delivery_count == 2 and not m.settled
    assert m.fields == {"a": [1, 2], "b": b"raw"} and m["a"] == [1, 2]
    assert "1-0" in repr(m) and "deliveries=2" in repr(m)
    bad = BaseMessage("2-0", {"a": "not json"}, 1, CODEC)
    with pytest.raises(DecodeError):
        _ = bad.fields


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
    ops, out = trace(core.add_many(SPEC, [["a", b"1"], ["a", b"2"]]), lambda op: [b"1-0", b"1-1"])
    assert out == ["1-0", "1-1"] and isinstance(ops[0], Batch) and len(ops[0].ops) == 2


def test_length_delete() -> None:
    assert replay(core.length(SPEC), [(Command("XLEN", KEY), 4)]) == 4
    assert replay(core.delete(SPEC), [(Command("DEL", KEY, DLQ, keys=(KEY, DLQ)), 2)]) == 2


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
    assert replay(core.ensure_group(SPEC, c, st), [(create, b"OK")]) is True and st.group_ready
    assert replay(core.ensure_group(SPEC, c, st), []) is False
    busy = Exception("BUSYGROUP Consumer Group name already exists")
    assert replay(core.ensure_group(SPEC, c, ConsumerState()), [(create, busy)]) is False
    with pytest.raises(Exception, match="WRONGTYPE"):
        replay(core.ensure_group(SPEC, c), [(create, Exception("WRONGTYPE"))])


def test_ack_nack_dead_letter() -> None:
    assert replay(core.ack(SPEC, "g", []), []) == 0
    assert replay(core.ack(SPEC, "g", ["1-0"]), [(K("XACK", KEY, "g", "1-0"), 1)]) == 1
    assert replay(core.nack(SPEC, cfg(), []), []) == 0
    ops, n = trace(core.nack(SPEC, cfg(min_idle=2.0), ["1-0"], delay=0.5), lambda op: 1)
    assert n == 1 and ops[0].args == ("g", "w", 1500, "1-0")  # type: ignore[union-attr]
    ops, _ = trace(core.nack(SPEC, cfg(), ["1-0"], delay=-1), lambda op: 1)
    assert ops[0].args[2] == 86_400_000  # type: ignore[union-attr]
    ops, n = trace(core.dead_letter(SPEC, cfg(delete_dead=True), "1-0", "x" * 5000, "w"), lambda op: 3)
    assert n == 3 and ops[0].keys == (KEY, DLQ)  # type: ignore[union-attr]
    args = ops[0].args  # type: ignore[union-attr]
    assert args[0:3] == ("g", "1-0", "w") and len(str(args[3])) == 2000 and args[5] == 1


def test_next_batch_recovers_own_pending_first() -> None:
    st = ConsumerState(group_ready=True)
    rows = [("1-0", 2, ["a", b"1"])]
    steps: list[Any] = [(script_named("stream_claim"), claim_reply("1-0", rows))]
    d = replay(core.next_batch(SPEC, cfg(), st), steps)
    assert d.entries == [("1-0", {"a": b"1"})] and d.counts == [2] and d.count_of(0) == 2
    assert (st.recovering, st.own_cursor, st.stats.recovered) == (True, "1-0", 1)
    # the pass ends: recovery is over, the reclaim timer is due, then a blocking read
    read = K("XREADGROUP", "GROUP", "g", "w", "COUNT", 10, "BLOCK", 1000, "STREAMS", KEY, ">")
    steps = [
        (lambda op: isinstance(op, Script) and op.args[2] == "own" and op.args[4] == "1-0", claim_reply()),
        (Now(), 100.0),
        (lambda op: isinstance(op, Script) and op.args[2] == "idle", claim_reply(gone=["0-1"], dead=1)),
        (read, [[KEY, [("5-0", {"a": b"2"})]]]),
    ]
    d = replay(core.next_batch(SPEC, cfg(), st), steps)
    assert d.entries == [("5-0", {"a": b"2"})] and d.counts is None
    assert not st.recovering and st.next_reclaim == 105.0
    assert (st.stats.gone, st.stats.dead_lettered, st.stats.delivered) == (1, 1, 2)


def test_next_batch_returns_reclaimed_entries_and_follows_the_cursor() -> None:
    st = ConsumerState(group_ready=True, recovering=False)
    steps = [(Now(), 10.0), (script_named("stream_claim"), claim_reply("7-0", [("3-0", 2, ["a", b"1"])]))]
    d = replay(core.next_batch(SPEC, cfg(), st), steps)
    assert d.counts == [2] and st.reclaim_cursor == "7-0" and st.next_reclaim == 0.0
    assert st.stats.reclaimed == 1


def test_next_batch_slices_long_blocks_and_pipelines_acks() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9, acks=["1-0", "1-1"])
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

    ops, d = trace(core.next_batch(SPEC, c, st), respond)
    reads = [op for op in ops if isinstance(op, Command) and op.name == "XREADGROUP"]
    batch = [op for op in ops if isinstance(op, Batch)]
    assert d.entries == [] and st.acks == [] and st.stats.acked == 2
    assert len(batch) == 1 and batch[0].ops[0] == K("XACK", KEY, "g", "1-0", "1-1")
    blocks = [batch[0].ops[1].args[7]] + [r.args[7] for r in reads]
    assert blocks == [4000, 4000, 2000]


def test_next_batch_without_block_reads_once() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)
    read = K("XREADGROUP", "GROUP", "g", "w", "COUNT", 3, "STREAMS", KEY, ">")
    d = replay(
        core.next_batch(SPEC, cfg(), st, count=3, block=0), [(Now(), 1.0), (read, [[KEY, []]]), (Now(), 1.0)]
    )
    assert d.entries == []


def test_settle_batch_acks_retries_and_dead_letters() -> None:
    st = ConsumerState()
    msgs = [BaseMessage(f"{i}-0", {}, n, CODEC) for i, n in enumerate((1, 1, 2, 3))]
    msgs[1].settled = True  # the handler acked it itself
    res = BatchResult(msgs, {2: ValueError("x"), 3: ValueError("boom")})
    steps = [
        (
            lambda op: (
                isinstance(op, Script) and op.script.name == "stream_dead_letter" and op.args[1] == "3-0"
            ),
            3,
        ),
        (
            lambda op: isinstance(op, Script) and op.script.name == "stream_nack" and op.args[3:] == ("2-0",),
            1,
        ),
    ]
    replay(core.settle_batch(SPEC, cfg(max_deliveries=3), st, res), steps)
    assert st.acks == ["0-0"] and all(m.settled for m in msgs)
    assert (st.stats.failed, st.stats.retried, st.stats.dead_lettered) == (2, 1, 1)
    # a dead-letter that finds the entry gone (another consumer took it) counts nothing
    st2 = ConsumerState()
    res2 = BatchResult([BaseMessage("9-0", {}, 5, CODEC)], {0: ValueError("x")})
    replay(core.settle_batch(SPEC, cfg(), st2, res2), [(script_named("stream_dead_letter"), 0)])
    assert st2.stats.dead_lettered == 0


def _responder(deliveries: list[Any], *, fail_first: bool = False) -> Any:
    state = {"failed": not fail_first, "t": 0.0}

    def respond(op: Any) -> Any:
        if isinstance(op, Now | Sleep):
            state["t"] += 0.5
            return state["t"]
        if isinstance(op, Compute):
            return op.fn(*op.args)
        if isinstance(op, Script):
            if op.script.name == "stream_claim":
                return claim_reply()
            return 1
        if isinstance(op, Command) and op.name == "XGROUP":
            return b"OK"
        if isinstance(op, Command | Batch):
            if not state["failed"]:
                state["failed"] = True
                return Transient("connection lost")
            rows = deliveries.pop(0) if deliveries else []
            reply = [[KEY, rows]] if rows else None
            return [len(rows), reply] if isinstance(op, Batch) else reply
        raise AssertionError(op)

    return respond


def test_work_loop_handles_acks_failures_and_idle_exit() -> None:
    st = ConsumerState()
    c = cfg(reclaim_interval=100.0)
    batches = [[("1-0", {"a": b"1"}), ("1-1", {"a": b"2"})], [("2-0", {"a": b"3"})]]

    def call_batch(d: Delivery) -> BatchResult:
        msgs = [BaseMessage(m, f, d.count_of(i), CODEC) for i, (m, f) in enumerate(d.entries)]
        return BatchResult(msgs, {})

    ops, stats = trace(
        core.work(SPEC, c, st, call_batch, until_idle=1.0), _responder(batches, fail_first=True)
    )
    assert stats.read_errors == 1 and any(isinstance(op, Sleep) for op in ops)
    assert stats.delivered == 3 and stats.acked == 3 and st.acks == []
    acks = [op for op in ops if isinstance(op, Batch) and op.ops[0].args[0] == "XACK"]
    assert len(acks) == 2  # each batch's acks rode with the next read


def test_work_loop_stops_at_max_messages_and_releases_unhandled() -> None:
    st = ConsumerState()
    batches: list[Any] = [[("1-0", {}), ("1-1", {}), ("1-2", {})]]

    def call_batch(d: Delivery) -> BatchResult:
        st.stopping = True  # a stop() arrives after the first message
        return BatchResult([BaseMessage(d.entries[0][0], {}, 1, CODEC)], {})

    ops, stats = trace(core.work(SPEC, cfg(), st, call_batch), _responder(batches))
    release = [op for op in ops if isinstance(op, Script) and op.script.name == "stream_nack"]
    assert release[0].args[3:] == ("1-1", "1-2") and stats.released == 1  # the canned reply says 1
    assert stats.acked == 1

    st2 = ConsumerState()

    def all_ok(d: Delivery) -> BatchResult:
        return BatchResult([BaseMessage(m, f, 1, CODEC) for m, f in d.entries], {})

    _, stats2 = trace(
        core.work(SPEC, cfg(), st2, all_ok, max_messages=2), _responder([[("1-0", {}), ("1-1", {})]])
    )
    assert stats2.acked == 2


def test_reclaim_now() -> None:
    st = ConsumerState(group_ready=True)
    d = replay(
        core.reclaim(SPEC, cfg(), st), [(script_named("stream_claim"), claim_reply(rows=[("1-0", 4, [])]))]
    )
    assert d.counts == [4] and st.stats.reclaimed == 1
    steps: list[Any] = [
        (lambda op: op.args[4] == "0-0", claim_reply("5-0", gone=["1-0"])),
        (lambda op: op.args[4] == "5-0", claim_reply("0-0", gone=["6-0"])),
    ]
    d = replay(core.reclaim(SPEC, cfg(), st), steps)
    assert d.entries == [] and st.stats.gone == 2


def test_flush_without_acks_sends_nothing() -> None:
    assert replay(core.flush(SPEC, cfg(), ConsumerState()), []) == 0


def test_a_vanished_group_is_a_stream_error_and_is_created_again() -> None:
    nogroup = Exception("NOGROUP No such key 't:stream:{jobs}' or consumer group 'g'")
    st = ConsumerState(group_ready=True)
    with pytest.raises(StreamError, match="does not exist"):
        replay(core.next_batch(SPEC, cfg(), st), [(script_named("stream_claim"), nogroup)])
    assert not st.group_ready
    st = ConsumerState(group_ready=True, recovering=False)
    with pytest.raises(StreamError):
        replay(core.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (script_named("stream_claim"), nogroup)])
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)
    with pytest.raises(StreamError):
        replay(core.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (ANY, nogroup)])
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)
    with pytest.raises(Exception, match="WRONGTYPE"):
        replay(core.next_batch(SPEC, cfg(), st), [(Now(), 0.0), (ANY, Exception("WRONGTYPE"))])


def test_work_loop_recreates_a_vanished_group() -> None:
    st = ConsumerState(group_ready=True, recovering=False, next_reclaim=1e9)
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

    ops, stats = trace(core.work(SPEC, cfg(), st, lambda d: None, until_idle=0.5), respond)
    assert stats.read_errors == 1 and any(isinstance(op, Sleep) for op in ops)
    assert any(isinstance(op, Command) and op.name == "XGROUP" for op in ops) and st.group_ready


def test_prune_consumers() -> None:
    st_cfg = cfg()
    ops, names = trace(
        core.prune_consumers(SPEC, st_cfg, 1.5), lambda op: b"OK" if isinstance(op, Command) else [b"old"]
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
    res = replay(core.claim(SPEC, cfg(), "own", "0-0", st), steps)
    assert res.cursor == "0-0" and st.acks == [] and st.stats.acked == 1
