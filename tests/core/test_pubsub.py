"""The pub/sub core without a server: names, envelope, publish flow, link decisions, overflow."""

from __future__ import annotations

from typing import Any

import pytest

from redispatterns._core import pubsub as core
from redispatterns._core.codec import JsonCodec
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import Command, Probe, Script
from redispatterns._core.pubsub import (
    ENVELOPE,
    Gap,
    LinkAction,
    LinkBroken,
    LinkState,
    Names,
    OverflowBuffer,
    PubSubMessage,
    Sub,
    SubscriberOverflow,
    backoff_delay,
    split_envelope,
)
from redispatterns._core.scripts import load
from redispatterns._core.server import ServerInfo
from redispatterns.errors import UnsupportedByServer
from redispatterns.testing.replay import replay

NAMES = Names(Keyspace("app:"))
CODEC = JsonCodec()


# --------------------------------------------------------------------------- names and envelope


def test_names_share_the_channel_hash_tag() -> None:
    assert NAMES.channel("orders") == "app:pubsub:{orders}"
    assert NAMES.counter("orders") == "app:pubsub:{orders}:seq"
    assert slot(NAMES.channel("orders")) == slot(NAMES.counter("orders"))
    assert NAMES.name_of(b"app:pubsub:{orders}") == "orders"
    assert NAMES.name_of("other:chan") == "other:chan"


def test_patterns_escape_the_prefix_but_not_the_users_glob() -> None:
    weird = Names(Keyspace("a*[b]:"))
    assert weird.pattern("user.*") == "a\\*\\[b\\]:pubsub:{user.*}"


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "line\nbreak"])
def test_bad_channel_names(bad: str) -> None:
    with pytest.raises(ValueError):
        NAMES.channel(bad)


def test_channel_name_type() -> None:
    with pytest.raises(TypeError):
        NAMES.channel(b"bytes")  # type: ignore[arg-type]


def test_envelope_split() -> None:
    assert split_envelope(ENVELOPE + b'42:{"a":1}') == (42, b'{"a":1}')
    assert split_envelope(b'{"a":1}') == (None, b'{"a":1}')
    assert split_envelope(ENVELOPE + b"x:1") == (None, ENVELOPE + b"x:1")
    assert split_envelope(ENVELOPE + b"12") == (None, ENVELOPE + b"12")
    assert core.decode_payload(CODEC, b"not json") == b"not json"
    assert core.encode_plain(CODEC, {"a": 1}) == b'{"a":1}'


# --------------------------------------------------------------------------- publish flow


def test_publish_numbered_is_one_script() -> None:
    flow = core.publish(
        "app:pubsub:{o}", "app:pubsub:{o}:seq", b"1", sharded=False, sequence=True, ttl_ms=None
    )

    def step(op: Any) -> bool:
        return (
            isinstance(op, Script)
            and op.script.name == "pubsub_publish"
            and op.keys == ("app:pubsub:{o}:seq",)
            and op.args == (b"1",)  # the shortest vector: the script takes the channel from the key
        )

    assert replay(flow, [(step, 3)]) == 3


def test_publish_builds_the_op_a_checked_script_would_be() -> None:
    """The numbered op is built in place (no slot check: one key): it equals a ``Script(...)``,
    for the positional call the publishers make and the keyword call alike."""
    for ttl in (None, b"5000"):
        args = (b"1",) if ttl is None else (b"1", ttl)
        for sharded, name in ((False, "pubsub_publish"), (True, "pubsub_spublish")):
            expected = Script(load(name), keys=(b"app:pubsub:{o}:seq",), args=args)
            positional = core.publish(
                b"app:pubsub:{o}", b"app:pubsub:{o}:seq", b"1", sharded, True, ttl, False
            )
            keywords = core.publish(
                b"app:pubsub:{o}", b"app:pubsub:{o}:seq", b"1", sharded=sharded, ttl_ms=ttl, probe=False
            )
            for flow in (positional, keywords):
                assert replay(flow, [(expected, 4)]) == 4


def test_publish_ttl_is_passed_only_when_set() -> None:
    flow = core.publish("c", "c:seq", b"1", sharded=False, sequence=True, ttl_ms=5000)
    assert replay(flow, [(lambda op: isinstance(op, Script) and op.args == (b"1", 5000), 2)]) == 2


@pytest.mark.parametrize("name", ["orders", "#7", "zamówienia", "a:seq", "x" * 300, "s p"])
def test_the_counter_is_the_channel_and_a_suffix_the_scripts_cut_off(name: str) -> None:
    """The scripts PUBLISH to ``string.sub(KEYS[1], 1, -5)``: that must be the channel, in bytes."""
    for names in (NAMES, Names(Keyspace("")), Names(Keyspace("a*[b]:"))):
        counter, channel = names.counter(name), names.channel(name)
        assert core.SEQ_SUFFIX == ":seq"
        assert counter.encode()[: -len(core.SEQ_SUFFIX)] == channel.encode()
        assert slot(counter) == slot(channel)
    for script in ("pubsub_publish", "pubsub_spublish"):
        assert b"string.sub(KEYS[1], 1, -%d)" % (len(core.SEQ_SUFFIX) + 1) in load(script).source


def test_the_script_writes_the_envelope_the_reader_parses() -> None:
    for script, command in (("pubsub_publish", b"PUBLISH"), ("pubsub_spublish", b"SPUBLISH")):
        source = load(script).source
        assert b"redis.call('" + command + b"', " in source
        assert b"'" + ENVELOPE + b"' .. string.format('%d', seq) .. ':' .. ARGV[1]" in source


def test_publish_sharded_checks_the_server_first() -> None:
    ok = ServerInfo("redis", (7, 0, 15), capabilities=frozenset({"sharded_pubsub"}))

    def spublish(*args: Any) -> Any:
        return lambda op: isinstance(op, Script) and op.script.name == "pubsub_spublish" and op.args == args

    flow = core.publish("c", "c:seq", b"1", sharded=True, sequence=True, ttl_ms=5000)
    assert replay(flow, [(Probe(), ok), (spublish(b"1", 5000), 2)]) == 2
    flow = core.publish("c", "c:seq", b"1", sharded=True, sequence=True, ttl_ms=None)
    assert replay(flow, [(Probe(), ok), (spublish(b"1"), 0)]) == 0
    flow = core.publish("c", "c:seq", b"1", sharded=True, sequence=True, ttl_ms=None, probe=False)
    assert replay(flow, [(spublish(b"1"), 0)]) == 0  # the caller knows: no probe
    old = ServerInfo("redis", (6, 2, 0))
    with pytest.raises(UnsupportedByServer):
        replay(core.publish("c", "c:seq", b"1", sharded=True, sequence=False, ttl_ms=None), [(Probe(), old)])


def test_publish_without_sequence_is_the_raw_command() -> None:
    flow = core.publish("c", "c:seq", b"1", sharded=False, sequence=False, ttl_ms=None)
    assert replay(flow, [(Command("PUBLISH", "c", b"1"), 4)]) == 4
    ok = ServerInfo("valkey", (8, 1, 8), capabilities=frozenset({"sharded_pubsub"}))
    flow = core.publish("c", "c:seq", b"1", sharded=True, sequence=False, ttl_ms=None)
    assert replay(flow, [(Probe(), ok), (Command("SPUBLISH", "c", b"1", keys=("c",)), 1)]) == 1


# --------------------------------------------------------------------------- plan, backoff


def test_plan_validates_and_dedupes() -> None:
    subs = core.plan(NAMES, ["a", "a", "b"], ["p*"], sharded=False)
    assert [(s.kind, s.name) for s in subs] == [("channel", "a"), ("channel", "b"), ("pattern", "p*")]
    assert [s.kind for s in core.plan(NAMES, ["a"], [], sharded=True)] == ["shard"]
    with pytest.raises(TypeError):
        core.plan(NAMES, "a", [], sharded=False)
    with pytest.raises(TypeError):
        core.plan(NAMES, ["a"], "p*", sharded=False)
    with pytest.raises(ValueError):
        core.plan(NAMES, ["a"], ["p*"], sharded=True)
    with pytest.raises(ValueError):
        core.plan(NAMES, [], [], sharded=False)


def test_shard_groups() -> None:
    subs = core.plan(NAMES, ["a", "b", "c"], [], sharded=True)
    groups = core.shard_groups(subs, lambda s: "n1" if s.name != "b" else "n2")
    assert {k: [s.name for s in v] for k, v in groups.items()} == {"n1": ["a", "c"], "n2": ["b"]}


def test_backoff_is_capped_exponential_with_jitter() -> None:
    assert backoff_delay(0, 0.1, 5, 0.5) == 0
    assert backoff_delay(1, 0.1, 5, 0.0) == pytest.approx(0.05)
    assert backoff_delay(1, 0.1, 5, 0.999) == pytest.approx(0.1, abs=1e-3)
    assert backoff_delay(3, 0.1, 5, 1.0) == pytest.approx(0.4)
    assert backoff_delay(100, 0.1, 5, 1.0) == pytest.approx(5.0)
    assert backoff_delay(100, 0.1, 5, 0.0) == pytest.approx(2.5)


# --------------------------------------------------------------------------- link state


def _link(subs: tuple[Sub, ...] | None = None, **kw: Any) -> LinkState:
    subs = subs or core.plan(NAMES, ["a", "b"], ["p*"], sharded=False)
    kw.setdefault("ping_interval", 5.0)
    kw.setdefault("ping_timeout", 2.0)
    return LinkState(subs, names=NAMES, codec=CODEC, backoff=(0.1, 1.0), **kw)


def _live(st: LinkState, wall: float = 100.0) -> list[Any]:
    events: list[Any] = []
    for s in st.subs:
        kind = {"channel": b"subscribe", "pattern": b"psubscribe", "shard": b"ssubscribe"}[s.kind]
        events += st.on_reply([kind, s.full, 1], 0.0, wall)
    return events


def _msg(st: LinkState, name: str, seq: int | None, data: bytes = b"1") -> list[Any]:
    raw = data if seq is None else ENVELOPE + str(seq).encode() + b":" + data
    return st.on_reply([b"message", NAMES.channel(name).encode(), raw], 1.0, 200.0)


def test_connecting_subscribes_by_kind_and_shards_by_slot() -> None:
    st = _link()
    assert st.connecting(0.0) == [
        (b"SUBSCRIBE", b"app:pubsub:{a}", b"app:pubsub:{b}"),
        (b"PSUBSCRIBE", NAMES.pattern("p*").encode()),
    ]
    shards = core.plan(NAMES, [f"s{i}" for i in range(6)], [], sharded=True)
    cmds = _link(shards).connecting(0.0)
    assert all(c[0] == b"SSUBSCRIBE" for c in cmds)
    assert sorted(x for c in cmds for x in c[1:]) == sorted(s.full for s in shards)
    for c in cmds:  # never one SSUBSCRIBE across slots (CROSSSLOT)
        assert len({slot(x) for x in c[1:]}) == 1


def test_first_subscription_is_not_a_gap() -> None:
    st = _link()
    st.connecting(0.0)
    assert st.on_reply([b"subscribe", b"app:pubsub:{a}", 1], 0.0, 1.0) == []
    assert not st.live
    assert st.on_reply([b"subscribe", b"app:pubsub:{b}", 2], 0.0, 1.0) == []
    assert st.on_reply([b"psubscribe", NAMES.pattern("p*").encode(), 3], 0.0, 1.0) == []
    state: Any = st
    assert state.live and state.ever_live and state.reconnects == 0


def test_lost_connection_is_reported_once_resubscribed() -> None:
    st = _link()
    st.connecting(0.0)
    _live(st)
    d1 = st.on_lost("ConnectionError: reset", 1.0, 150.0, 0.0)
    assert not st.live and d1 == pytest.approx(0.05)
    d2 = st.on_lost("ConnectionError: refused", 2.0, 151.0, 0.0)  # a failed retry keeps the start
    assert d2 == pytest.approx(0.1)
    st.connecting(3.0)
    events = _live(st, wall=160.0)
    assert events == [
        Gap("disconnect", ("a", "b", "p*"), since=150.0, until=160.0, error="ConnectionError: reset")
    ]
    assert st.attempt == 0 and st.reconnects == 1 and st.lost_at is None


def test_initial_connect_failures_are_not_gaps() -> None:
    st = _link()
    assert st.on_lost("refused", 0.0, 1.0, 0.5) > 0
    assert st.last_error == "refused" and st.lost_reason == ""  # said when it never confirms
    st.connecting(1.0)
    assert _live(st) == []


def test_sequence_gaps_and_resets() -> None:
    st = _link()
    st.connecting(0.0)
    _live(st)
    assert _msg(st, "a", 5) == [
        PubSubMessage("a", 1, 5, None, False, ENVELOPE + b"5:1")
    ]  # first seen: no gap
    assert len(_msg(st, "a", 6)) == 1
    events = _msg(st, "a", 9)
    assert events[0] == Gap("sequence", ("a",), 200.0, 200.0, missed=2, first_missing=7, last_missing=8)
    assert isinstance(events[1], PubSubMessage) and events[1].seq == 9
    assert len(_msg(st, "b", 1)) == 1  # channels are tracked apart
    assert len(_msg(st, "a", 1)) == 1  # counter restarted at 1: nothing missed
    reset = _msg(st, "a", 1)  # same number again: counter restarted, 1 is the first
    assert len(reset) == 1
    events = _msg(st, "b", 1)  # restarted and already at 1 -> nothing missed
    assert len(events) == 1
    events = _msg(st, "a", 3)
    assert events[0].missed == 1
    st2 = _link()
    st2.on_reply([b"message", NAMES.channel("a").encode(), ENVELOPE + b"4:1"], 0, 0)
    events = st2.on_reply([b"message", NAMES.channel("a").encode(), ENVELOPE + b"3:1"], 0, 0)
    assert events[0] == Gap("sequence", ("a",), 0, 0, missed=2, first_missing=1, last_missing=2)
    assert _msg(st, "a", None, b'"x"')[0] == PubSubMessage("a", "x", None, None, False, b'"x"')


def test_pattern_and_shard_messages() -> None:
    st = _link()
    pat = NAMES.pattern("p*").encode()
    m: Any
    (m,) = st.on_reply([b"pmessage", pat, b"app:pubsub:{p1}", ENVELOPE + b"1:[1]"], 0, 0)
    assert (m.channel, m.pattern, m.data, m.seq) == ("p1", "p*", [1], 1)
    shards = core.plan(NAMES, ["s"], [], sharded=True)
    (m,) = _link(shards).on_reply(["smessage", "app:pubsub:{s}", "2"], 0, 0)
    assert (m.channel, m.sharded, m.data) == ("s", True, 2)


def test_ping_deadline_declares_half_open_connections_dead() -> None:
    st = _link(ping_interval=1.0, ping_timeout=0.5, max_wait=10.0)
    st.connecting(0.0)
    assert st.tick(0.5) is None
    assert st.wait_time(0.5) == pytest.approx(0.5)
    assert st.tick(1.0) is LinkAction.PING and LinkAction("ping") is LinkAction.PING
    assert isinstance(LinkAction.PING, str) and f"{LinkAction.PING}" == "ping"
    assert repr(LinkAction.DEAD) == "LinkAction.DEAD" and str(LinkAction.DEAD) == "dead"
    assert st.wait_time(1.2) == pytest.approx(0.3)
    assert st.tick(1.2) is None
    assert st.on_reply([b"pong", core.PING_TOKEN], 1.3, 0) == []
    assert st.ping_sent_at is None
    assert st.tick(2.5) == "ping"
    assert st.on_reply(core.PING_TOKEN, 2.6, 0) == []  # the bare PONG fakeredis sends
    assert st.tick(3.7) == "ping"
    assert st.tick(4.3) == "dead"
    assert st.on_reply(None, 4.4, 0) == []  # a timed-out read is no traffic
    assert st.tick(4.4) == "dead"


def test_ping_off_and_wait_cap() -> None:
    st = _link(ping_interval=0, max_wait=0.25)
    st.connecting(0.0)
    assert st.tick(1000.0) is None
    assert st.wait_time(1000.0) == 0.25


def test_forced_unsubscribe_breaks_the_link_and_noise_is_ignored() -> None:
    st = _link()
    st.connecting(0.0)
    _live(st)
    with pytest.raises(LinkBroken):
        st.on_reply([b"unsubscribe", b"app:pubsub:{a}", 0], 0, 0)
    assert st.on_reply([b"sunsubscribe", b"not-ours", 0], 0, 0) == []
    assert st.on_reply([], 0, 0) == []
    assert st.on_reply(42, 0, 0) == []
    assert st.on_reply(b"other", 0, 0) == []
    assert st.on_reply([b"subscribe", b"app:pubsub:{a}", 1], 0, 0) == []  # already live


# --------------------------------------------------------------------------- overflow buffer


def _m(i: int) -> PubSubMessage:
    return PubSubMessage("c", i)


def _fill(policy: str, n: int, size: int = 10) -> OverflowBuffer:
    buf = OverflowBuffer(size, policy)
    for i in range(n):
        buf.put(_m(i), wall=float(i))
    return buf


def _drain(buf: OverflowBuffer) -> list[Any]:
    out = []
    while (item := buf.take(99.0)) is not None:
        out.append(item.data if isinstance(item, PubSubMessage) else (item.reason, item.missed))
    return out


def test_drop_oldest_keeps_the_newest() -> None:
    buf = _fill("drop_oldest", 15)
    assert buf.dropped == 15 - 10
    assert _drain(buf) == [("overflow", 5), *range(5, 15)]


def test_drop_newest_keeps_the_first() -> None:
    buf = _fill("drop_newest", 15)
    assert _drain(buf) == [("overflow", 5), *range(10)]
    assert buf.dropped == 5


def test_block_asks_the_reader_to_wait() -> None:
    buf = _fill("block", 10)
    assert buf.put(_m(10), 0.0) is False
    assert buf.take(0.0) == _m(0)
    assert buf.put(_m(10), 0.0) is True
    assert buf.dropped == 0 and len(buf) == 10


def test_error_policy_fails_the_consumer() -> None:
    buf = _fill("error", 11)
    assert buf.failed
    with pytest.raises(SubscriberOverflow, match="too slow"):
        buf.take(0.0)


def test_gaps_are_never_dropped_and_clear_counts_messages() -> None:
    buf = OverflowBuffer(1, "drop_oldest")
    gap = Gap("disconnect", ("c",), 1.0, 2.0)
    buf.put(_m(1), 0.0)
    buf.put(gap, 0.0)
    buf.put(_m(2), 0.0)
    assert buf.put(Gap("disconnect", ("c",), 3.0, 4.0), 0.0)
    assert len(buf) == 3
    assert buf.clear() == 1
    assert buf.take(0.0) is None


def test_gap_drop_oldest_skips_gaps_when_dropping() -> None:
    buf = OverflowBuffer(1, "drop_oldest")
    gap = Gap("disconnect", ("c",), 1.0, 2.0)
    buf.put(gap, 0.0)
    buf.put(_m(1), 0.0)
    buf.put(_m(2), 0.0)
    assert _drain(buf) == [("overflow", 1), ("disconnect", None), 2]


@pytest.mark.parametrize(
    ("size", "policy", "exc"), [(0, "block", ValueError), (True, "block", TypeError), (1, "x", ValueError)]
)
def test_buffer_validation(size: Any, policy: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        OverflowBuffer(size, policy)


def test_split_hands_moved_channels_their_loss_and_numbers() -> None:
    subs = core.plan(NAMES, ["a", "b", "c"], [], sharded=True)
    st = _link(subs)
    st.connecting(0.0)
    _live(st)
    st.on_reply([b"smessage", NAMES.channel("b").encode(), ENVELOPE + b"4:1"], 0, 0)
    st.on_lost("LinkBroken: sunsubscribe", 1.0, 50.0, 0.0)
    other = st.split([subs[0], subs[2]])
    assert [s.name for s in st.subs] == ["a", "c"] and [s.name for s in other.subs] == ["b"]
    assert st.connecting(2.0) != other.connecting(2.0)
    events = _live(other, wall=60.0)
    assert events == [Gap("disconnect", ("b",), since=50.0, until=60.0, error="LinkBroken: sunsubscribe")]
    gap, _ = other.on_reply([b"smessage", NAMES.channel("b").encode(), ENVELOPE + b"6:1"], 0, 70.0)
    assert isinstance(gap, Gap) and (gap.first_missing, gap.last_missing) == (5, 5)
    with pytest.raises(ValueError):
        st.split(st.subs)
    with pytest.raises(ValueError):
        st.split([subs[1]])


# --------------------------------------------------------------------------- the driver's local queue


def _queued(i: int) -> PubSubMessage:
    return PubSubMessage("c", i, i)


def test_inbox_hands_each_message_to_exactly_one_waiting_thread() -> None:
    import threading
    import time

    from redispatterns._links import Inbox

    inbox = Inbox(OverflowBuffer(10_000, "block"))
    stopped = threading.Event()
    got: list[int] = []
    lock = threading.Lock()

    def consume() -> None:
        while (item := inbox.take(time.monotonic() + 5)) is not None:
            assert isinstance(item, PubSubMessage)
            with lock:
                got.append(item.data)

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in consumers:
        t.start()
    for i in range(2000):
        assert inbox.put(_queued(i), stopped)
    deadline = time.monotonic() + 10
    while len(got) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    inbox.close()  # wakes the consumers still waiting: take() returns None
    for t in consumers:
        t.join(5)
        assert not t.is_alive()
    assert sorted(got) == list(range(2000))
    assert (inbox.received, inbox.delivered) == (2000, 2000)
    assert inbox.take(None) is None  # closed: never blocks


def test_inbox_block_policy_waits_for_room_and_timeouts_return_none() -> None:
    import threading
    import time

    from redispatterns._links import Inbox

    inbox = Inbox(OverflowBuffer(1, "block"))
    stopped = threading.Event()
    assert inbox.take(time.monotonic() + 0.05) is None  # empty: the deadline passes
    inbox.put(_queued(1), stopped)
    done = threading.Event()

    def second_put() -> None:
        inbox.put(_queued(2), stopped)
        done.set()

    threading.Thread(target=second_put).start()
    assert not done.wait(0.2)  # full: the second put waits for room
    first = inbox.take(None)
    assert isinstance(first, PubSubMessage) and first.data == 1
    assert done.wait(5)
    second = inbox.take(None)
    assert isinstance(second, PubSubMessage) and second.data == 2


def test_async_inbox_wakes_a_waiting_task_and_times_out() -> None:
    import asyncio
    import threading
    import time

    from redispatterns._links import AsyncInbox

    async def main() -> None:
        inbox = AsyncInbox(OverflowBuffer(10, "drop_oldest"))
        for _ in range(3):  # an idle poll (the handler worker's) leaves no waiter behind
            assert await inbox.take(time.monotonic() + 0.02) is None
        assert not inbox._waiters
        waiter = asyncio.ensure_future(inbox.take(time.monotonic() + 5))
        await asyncio.sleep(0.01)
        assert await inbox.put(_queued(7), threading.Event())
        item = await waiter
        assert isinstance(item, PubSubMessage) and item.data == 7
        late = asyncio.ensure_future(inbox.take(None))
        await asyncio.sleep(0.01)
        inbox.close()
        assert await asyncio.wait_for(late, 5) is None

    asyncio.run(main())


def test_the_fast_message_constructor_builds_the_same_frozen_message() -> None:
    """The reader builds messages through the slots' descriptors (hot path): the same value,
    hash and immutability as ``PubSubMessage(...)``, for every field in order."""
    import dataclasses

    from redispatterns._core.pubsub import _new_message

    args = ("orders", {"id": 7}, 3, "ord*", True, b"#rp1:3:{}")
    fast, slow = _new_message(*args), PubSubMessage(*args)
    assert fast == slow and repr(fast) == repr(slow)
    assert tuple(getattr(fast, f.name) for f in dataclasses.fields(PubSubMessage)) == args
    assert hash(_new_message("c", 1, None, None, False, b"")) == hash(PubSubMessage("c", 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.seq = 4  # type: ignore[misc]
    assert dataclasses.replace(fast, seq=4).seq == 4


def test_message_replies_read_the_same_in_every_shape() -> None:
    """The hot path (a ``list`` of bytes, or a subclass such as hiredis's push notification in
    asyncio) and the general path (``str`` parts of a decoding client, tuples) agree."""

    class Push(list):  # type: ignore[type-arg]
        pass

    chan = NAMES.channel("a").encode()
    shapes = [
        [b"message", chan, ENVELOPE + b"1:7"],
        Push([b"message", chan, ENVELOPE + b"2:7"]),
        (b"message", chan, ENVELOPE + b"3:7"),
        ["message", chan.decode(), (ENVELOPE + b"4:7").decode()],
    ]
    st = _link()
    got = [st.on_reply(reply, 0, 0) for reply in shapes]
    assert got == [[PubSubMessage("a", 7, n, None, False, ENVELOPE + b"%d:7" % n)] for n in (1, 2, 3, 4)]
