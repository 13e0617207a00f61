"""Session flows without a server: tokens, expiry math on a virtual clock, every branch of the flows."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from redispatterns._core import session as core
from redispatterns._core.codec import default_codec
from redispatterns._core.keys import Keyspace
from redispatterns._core.ops import Batch, Command, Compute, Op, Script
from redispatterns._core.scripts import load
from redispatterns._core.writebehind import WriteBehind, prime, shard_of
from redispatterns.errors import DecodeError
from redispatterns.testing.replay import ReplayMismatch, replay, trace

TOK = "A" * 43


def cfg(**kw: Any) -> core.SessionConfig:
    opts: dict[str, Any] = {
        "keyspace": Keyspace("t:"),
        "codec": default_codec(),
        "idle_ms": 1000,
        "lifetime_ms": 5000,
    }
    opts.update(kw)
    return core.SessionConfig(**opts)


def script(name: str) -> Any:
    return lambda op: isinstance(op, Script) and op.script.name == name


TIMES = b"[9000,1000,1000]"  # the '_' field: deadline, idle, created (ms)
ABOUT = b'["u",{"ip":"1.1.1.1"}]'  # the '_a' field: user, meta


def fields(**extra: Any) -> list[bytes]:
    """A session hash of the previous layout (a field per fact), as HGETALL gives it."""
    base = {"_u": b"u", "_c": b"1000", "_s": b"1500", "_abs": b"9000", "_i": b"1000", "_v": b"3",
            "_m": orjson.dumps({"ip": "1.1.1.1"}), "d:name": b'"Ann"'}  # fmt: skip
    base.update(extra)
    return [x for k, v in base.items() for x in (k.encode(), v)]


# --------------------------------------------------------------------------- tokens


def test_tokens_are_256_bit_urlsafe_and_unique() -> None:
    toks = {core.new_token() for _ in range(200)}
    assert len(toks) == 200
    assert all(core.check_token(t) == t for t in toks)


@pytest.mark.parametrize(
    "bad", ["", "x" * 10_000, "é" * 43, "A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "\n"]
)
def test_malformed_token_strings_are_unknown(bad: str) -> None:
    assert core.check_token(bad) is None


@pytest.mark.parametrize("wrong", [None, 1, b"A" * 43, ["A" * 43]])
def test_non_string_tokens_are_type_errors(wrong: object) -> None:
    with pytest.raises(TypeError, match="token is a str"):
        core.check_token(wrong)


def test_token_id_is_a_hash_optionally_keyed() -> None:
    assert core.token_id(TOK) == hashlib.sha256(TOK.encode()).hexdigest()
    keyed = core.token_id(TOK, b"k" * 16)
    assert keyed != core.token_id(TOK) and len(keyed) == 64
    assert cfg(secret=b"k" * 16).id_of(TOK) == keyed


# --------------------------------------------------------------------------- expiry math


class VirtualSession:
    """The TTL rules of lua/session_get.lua on a virtual clock (ms)."""

    def __init__(self, now: int, idle: int, lifetime: int, permille: int = 1000) -> None:
        self.deadline = now + lifetime
        self.idle, self.permille = idle, permille
        self.expires = now + core.sliding_ttl_ms(now, self.deadline, idle)
        self.writes = 0

    def get(self, now: int) -> bool:
        if now >= self.expires or now >= self.deadline:
            return False
        if core.refresh_due(self.expires - now, self.idle, self.permille):
            self.expires = now + core.sliding_ttl_ms(now, self.deadline, self.idle)
            self.writes += 1
        return True


def test_sliding_keeps_an_active_session_until_its_absolute_deadline() -> None:
    s = VirtualSession(0, idle=1000, lifetime=5000)
    alive = [t for t in range(0, 7000, 500) if s.get(t)]
    assert alive == list(range(0, 5000, 500))  # every read slid it, none passed the deadline
    assert s.expires == 5000


def test_idle_gap_ends_the_session() -> None:
    s = VirtualSession(0, idle=1000, lifetime=60_000)
    assert s.get(900)
    assert s.get(1800)  # slid at 900
    assert not s.get(2801)


def test_refresh_threshold_skips_writes_but_keeps_the_session() -> None:
    eager = VirtualSession(0, idle=1000, lifetime=60_000)
    lazy = VirtualSession(0, idle=1000, lifetime=60_000, permille=500)
    times = list(range(100, 10_000, 100))
    assert all(eager.get(t) for t in times) and all(lazy.get(t) for t in times)
    assert eager.writes == len(times)
    assert lazy.writes < len(times) // 4


def test_sliding_ttl_is_capped_by_the_deadline() -> None:
    assert core.sliding_ttl_ms(0, 5000, 1000) == 1000
    assert core.sliding_ttl_ms(4500, 5000, 1000) == 500
    assert core.sliding_ttl_ms(5000, 5000, 1000) <= 0
    assert core.refresh_due(-1, 1000, 1)  # no TTL at all: always set one


# --------------------------------------------------------------------------- flows


def get_reply() -> list[Any]:
    """A session hash as create writes it, as session_get returns it (HGETALL's pairs)."""
    return [b"_s", b"1500", b"_", TIMES, b"_a", ABOUT, b"_v", b"3", b"d:name", b'"Ann"']


def test_get_is_one_script_and_decodes() -> None:
    c = cfg(refresh_permille=500)
    sid = c.id_of(TOK)
    expected = Script(load("session_get"), keys=c.session_keys(sid)[:1], args=(b"500",))
    s = replay(core.get(c, TOK), [(expected, get_reply())])
    assert s is not None
    assert (s.user_id, s.data, s.version, s.meta) == ("u", {"name": "Ann"}, 3, {"ip": "1.1.1.1"})
    assert (s.created, s.last_seen, s.expires_at, s.idle_ttl) == (1.0, 1.5, 9.0, 1.0)
    assert s.get("missing", 7) == 7 and s["name"] == "Ann"
    assert replay(core.get(c, TOK), [(expected, 0)]) is None
    assert replay(core.get(c, "nope"), []) is None


def test_get_decodes_unset_metadata_and_no_fields() -> None:
    reply = [b"_abs", b"9000", b"_i", b"1000", b"_s", 1200]  # previous layout; a slide's integer time
    s = replay(core.get(cfg(), TOK), [(script("session_get"), reply)])
    assert s is not None
    assert (s.user_id, s.data, s.version, s.meta, s.created, s.last_seen) == ("", {}, 0, {}, 0.0, 1.2)


def decoded(reply: list[Any]) -> tuple[Any, ...]:
    s = replay(core.get(cfg(), TOK), [(script("session_get"), reply)])
    assert s is not None
    return (s.user_id, s.data, s.version, s.meta, s.created, s.last_seen, s.expires_at, s.idle_ttl)


def test_get_reads_either_layout_in_any_order() -> None:
    want = ("u", {"name": "Ann"}, 3, {"ip": "1.1.1.1"}, 1.0, 1.5, 9.0, 1.0)
    assert decoded(get_reply()) == want
    assert decoded(fields()) == want  # a session written before the '_' field
    pairs = list(zip(get_reply()[::2], get_reply()[1::2], strict=True))
    assert decoded([x for p in reversed(pairs) for x in p]) == want  # a big hash: no insertion order
    legacy = list(zip(fields()[::2], fields()[1::2], strict=True))
    assert decoded([x for p in reversed(legacy) for x in p]) == want
    as_str = [x.decode() if isinstance(x, bytes) else x for x in get_reply()]  # a decoding client
    assert decoded(as_str) == want


def test_get_leaves_out_fields_that_are_not_data() -> None:
    extra = [b"_n", b"4", b"d:a", b"1", b"s:k", b'"sum"', b"st:k", b"1:2:3", b"_tn", b"9", b"zz", b"x"]
    got = decoded([*get_reply(), *extra])
    assert got[1] == {"name": "Ann", "a": 1} and got[2] == 3
    assert decoded([*get_reply()[:8], b"_n", b"4"])[1] == {}


@pytest.mark.parametrize(
    ("names", "keys"),
    [
        ([b"d:a", b"d:b\x00d:c", b"d:"], ["a", "b\x00d:c", ""]),  # a name holding the separator
        ([b"d:\xff", b"d:x"], ["\udcff", "x"]),  # a foreign writer's non-UTF-8 name
        (["d:s", "d:t"], ["s", "t"]),  # a decoding client's str names
        ([b"d:caf\xc3\xa9", b"d:\x00"], ["caf\u00e9", "\x00"]),
    ],
)
def test_get_strips_the_data_prefix_from_any_name(names: list[Any], keys: list[str]) -> None:
    reply = [b"_s", b"1", b"_", TIMES, b"_a", ABOUT, b"_v", b"1", *[x for n in names for x in (n, b"0")]]
    s = replay(core.get(cfg(), TOK), [(script("session_get"), reply)])
    assert s is not None and list(s.data) == keys


def test_get_decodes_in_one_json_document_only_what_the_fields_would_give() -> None:
    """The JSON codec's fast path (one ``orjson.loads`` of a template) gives what decoding each
    field would: names that JSON or ``%`` must escape, a ``bytes`` value (its mark is never
    UTF-8), values that are not JSON documents of their own (never glued into one)."""
    names = [b'd:q"uo\\te', b"d:100%", b"d:%b%s", b"d:\xc3\xa9t\xc3\xa9", b"d:raw", b"d:n"]
    values = [b'"x"', b"[1,2]", b"{}", b"null", b"\xffbin\x00ary", b"1.5"]
    reply = [*get_reply()[:8], *[x for p in zip(names, values, strict=True) for x in p]]
    s = replay(core.get(cfg(), TOK), [(script("session_get"), reply)])
    assert s is not None
    want: dict[str, Any] = {'q"uo\\te': "x", "100%": [1, 2], "%b%s": {}, "\u00e9t\u00e9": None}
    want |= {"raw": b"bin\x00ary", "n": 1.5}
    assert s.data == want
    assert (s.user_id, s.meta, s.version, s.expires_at) == ("u", {"ip": "1.1.1.1"}, 3, 9.0)
    for a, b in ((b'"x', b'y"'), (b'1,"c":2', b"3")):  # not JSON alone (the second glues validly)
        glued = [*get_reply()[:8], b"d:a", a, b"d:b", b]
        with pytest.raises(DecodeError):
            replay(core.get(cfg(), TOK), [(script("session_get"), glued)])
    pairs = list(zip(reply[::2], reply[1::2], strict=True))  # a big hash: by name, same result
    s2 = replay(core.get(cfg(), TOK), [(script("session_get"), [x for p in reversed(pairs) for x in p])])
    assert s2 is not None and s2.data == s.data and s2.last_seen == s.last_seen


def test_json_templates_are_kept_for_a_bounded_number_of_name_sets() -> None:
    before = len(core._PLANS)
    for i in range(core._PLAN_LIMIT + 10):
        reply = [*get_reply()[:8], f"d:f{i}".encode(), str(i).encode()]
        s = replay(core.get(cfg(), TOK), [(script("session_get"), reply)])
        assert s is not None and s.data == {f"f{i}": i}
    assert before <= len(core._PLANS) <= core._PLAN_LIMIT


def test_get_hook_runs_as_a_compute_op() -> None:
    def hook(s: core.Session) -> None:
        return None

    c = cfg(on_get=hook)
    assert replay(core.get(c, TOK), [(script("session_get"), get_reply()), (Compute, None)]) is None


def test_keys_share_one_slot_per_subject() -> None:
    c = cfg()
    h, ev, x = c.session_keys("abc")
    assert (h, ev, x) == ("t:sess:{abc}", "t:sess:{abc}:ev", "t:sess:{abc}:x")
    assert c.index_key("u") == "t:sess-user:{u}"
    assert c.state_key("user", "u") == "t:sess-user:{u}:state"
    assert c.state_key("app", "a") == "t:sess-app:{a}:state"
    with pytest.raises(ValueError, match="scope"):
        c.state_key("session", "x")


def test_create_indexes_first_then_writes_then_confirms() -> None:
    c = cfg()

    def respond(op: Op) -> Any:
        assert isinstance(op, Script)
        return {"session_index_add": 7000, "session_create": 1, "session_index_swap": 1}[op.script.name]

    ops, tok = trace(core.create(c, "u", {"a": 1}, {"ip": "x"}), respond)
    assert [o.script.name for o in ops if isinstance(o, Script)] == [
        "session_index_add", "session_create", "session_index_swap"
    ]  # fmt: skip
    create = ops[1]
    assert isinstance(create, Script)
    assert create.args[:6] == (7000, 1000, 1, "", b'["u",{"ip":"x"}]', 0)  # created: the server's now
    assert b"d:a" not in create.args and "d:a" in create.args
    assert tok not in str(ops)  # only the hash travels
    assert core.check_token(tok) == tok


def test_create_refused_or_overtaken_by_logout_everywhere() -> None:
    c = cfg()
    steps_refused = [(script("session_index_add"), 7000), (script("session_create"), 0), (Command, 1)]
    replay(core.create(c, "u", None, {}), steps_refused)
    steps_overtaken = [
        (script("session_index_add"), 7000),
        (script("session_create"), 1),
        (script("session_index_swap"), 0),
        (script("session_destroy"), b"u"),
    ]
    replay(core.create(c, "u", None, {}), steps_overtaken)


def test_create_validates_before_any_io() -> None:
    c = cfg()
    for bad, err in ((None, TypeError), ("", ValueError), ("x" * 2000, ValueError)):
        with pytest.raises(err):
            next(core.create(c, bad, None, {}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="field names"):
        next(core.create(c, "u", {1: "x"}, {}))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="field names"):
        next(core.create(c, "u", {"": "x"}, {}))


def test_update_branches() -> None:
    c = cfg()
    expected = Script(
        load("session_update"), keys=c.session_keys(c.id_of(TOK))[:1], args=("4", 1, "d:a", b"1", "d:b")
    )
    assert replay(core.update(c, TOK, {"a": 1}, ["b"], 4), [(expected, 5)]) == 5
    # the common call sends the pairs alone (no header: the script tells them by the 'd:' prefix)
    key = c.session_keys(c.id_of(TOK))[:1]
    short = Script(load("session_update"), keys=key, args=("d:a", b"1", "d:b", b"2"))
    assert replay(core.update(c, TOK, {"a": 1, "b": 2}), [(short, 4)]) == 4
    removal = Script(load("session_update"), keys=key, args=("", 0, "d:b"))
    assert replay(core.update(c, TOK, None, ["b"]), [(removal, 4)]) == 4
    bump = Script(load("session_update"), keys=key, args=("", 0))
    assert replay(core.update(c, TOK, {}), [(bump, 4)]) == 4
    assert replay(core.update(c, TOK, {"a": 1}), [(script("session_update"), 0)]) is None
    assert replay(core.update(c, TOK, {"a": 1}, (), 1), [(script("session_update"), -1)]) == -1
    assert replay(core.update(c, "bad", {"a": 1}), []) is None
    with pytest.raises(TypeError, match="expect_version"):
        replay(core.update(c, TOK, {}, (), True), [])
    with pytest.raises(TypeError, match="not a single string"):
        replay(core.update(c, TOK, {}, "field"), [])


def test_destroy_marks_then_unindexes() -> None:
    c = cfg()
    sid = c.id_of(TOK)
    steps = [
        (Script(load("session_destroy"), keys=c.session_keys(sid), args=(60_000, "", "")), b"u"),
        (Command("ZREM", "t:sess-user:{u}", sid, keys=("t:sess-user:{u}",)), 1),
    ]
    assert replay(core.destroy(c, TOK), steps) is True
    assert replay(core.destroy(c, TOK), [(script("session_destroy"), 0)]) is False
    assert replay(core.destroy(c, ""), []) is False


def test_destroy_all_repeats_until_the_index_stays_empty() -> None:
    c = cfg()

    def batch_of(n: int) -> Any:
        return lambda op: isinstance(op, Batch) and len(op.ops) == 3 * n and op.ops[0].args[0] == "SET"

    steps = [
        (script("session_index_list"), [b"a", b"1", b"b", b"2"]),
        (batch_of(2), [True, 1, 1, True, 0, 0]),  # b's hash was already gone
        (script("session_index_list"), [b"c", b"3"]),  # a create that raced the first pass
        (batch_of(1), [True, 1, 0]),
        (script("session_index_list"), []),
    ]
    assert replay(core.destroy_all(c, "u"), steps) == 2
    capped = [(script("session_index_list"), [b"a", b"1"]), (batch_of(1), [True, 1, 0])] * 2
    assert replay(core.destroy_all(c, "u", max_passes=2), capped) == 2


def test_sessions_lists_live_and_prunes_dead() -> None:
    c = cfg()
    rows = [
        [b"[9000,1000,2000]", b'["u",{"ip":"x"}]', b"2500", None, None, None],
        [None, None, None, None, None, None],
        [None, None, None, b"1000", None, None],  # the previous layout, with no deadline or meta
    ]
    steps = [
        (script("session_index_list"), [b"b", b"9000", b"dead", b"9000", b"a", b"8000"]),
        (Batch, rows),
        (Command("ZREM", "t:sess-user:{u}", "dead", keys=("t:sess-user:{u}",)), 1),
    ]
    infos = replay(core.sessions(c, "u"), steps)
    assert [i.id for i in infos] == ["a", "b"]
    assert infos[1].ip == "x" and infos[1].user_agent is None and infos[1].last_seen == 2.5
    assert infos[0].meta == {} and infos[0].ip is None and infos[0].expires_at == 0.0
    assert infos[1].expires_at == 9.0 and infos[1].created == 2.0 and infos[0].created == 1.0
    assert replay(core.sessions(c, "u"), [(script("session_index_list"), [])]) == []


def test_rotate_indexes_then_takes_then_writes_then_swaps() -> None:
    c = cfg()
    old = c.id_of(TOK)
    h = c.session_keys(old)[0]
    taken = [[*get_reply(), b"_n", b"2"], [b'"e2"', b'"e1"']]
    events = (2, b'"e1"', b'"e2"')
    create_args: tuple[Any, ...] = (9000, 1000, b"3", 1000, ABOUT, *events, "d:name", b'"Ann"', "_n", b"2")
    steps = [
        (Command("HMGET", h, "_a", "_u", keys=(h,)), [ABOUT, None]),
        (
            lambda op: (
                isinstance(op, Script) and op.script.name == "session_index_add" and op.args[1:] == (5000, "")
            ),
            1,
        ),
        (Script(load("session_destroy"), keys=c.session_keys(old), args=(60_000, "u", "1")), taken),
        (lambda op: isinstance(op, Script) and op.args == create_args, 1),
        (lambda op: isinstance(op, Script) and op.args[1:] == (9000, old), 1),
    ]
    new = replay(core.rotate(c, TOK), steps)
    assert new and new != TOK
    # a session of the previous layout is rewritten in the current one
    legacy = [(Command, [None, b"u"]), steps[1], (steps[2][0], [fields(), [b'"e2"', b'"e1"']]), *steps[3:]]
    create_args = (9000, 1000, b"3", 1000, ABOUT, 2, b'"e1"', b'"e2"', "d:name", b'"Ann"')
    assert replay(core.rotate(c, TOK), legacy)
    assert replay(core.rotate(c, TOK), [(Command, [None, None])]) is None
    create_args = (9000, 1000, b"3", 1000, ABOUT, 2, b'"e1"', b'"e2"', "d:name", b'"Ann"', "_n", b"2")
    vanished = [steps[0], steps[1], (script("session_destroy"), 0), (Command, 1)]
    assert replay(core.rotate(c, TOK), vanished) is None
    assert replay(core.rotate(c, "?"), []) is None
    refused = [*steps[:3], (script("session_create"), 0), (Command, 1)]
    assert replay(core.rotate(c, TOK), refused) is None
    overtaken = [*steps[:4], (script("session_index_swap"), 0), (script("session_destroy"), b"u")]
    assert replay(core.rotate(c, TOK), overtaken) is None


def test_events_append_and_read() -> None:
    c = cfg(event_limit=3)
    h, key, _ = c.session_keys(c.id_of(TOK))
    assert replay(core.append_event(c, TOK, {"a": 1}), [(script("session_event"), 2)]) == 2
    assert replay(core.append_event(c, "", 1), []) == 0
    exists = Command("EXISTS", h, keys=(h,))
    read = Batch((exists, Command("LRANGE", key, 0, 2, keys=(key,))), transaction=True)
    assert replay(core.events(c, TOK), [(read, [1, [b"3", b"2"]])]) == [2, 3]
    assert replay(core.events(c, TOK), [(read, [0, [b"3", b"2"]])]) == []
    read1 = Batch((exists, Command("LRANGE", key, 0, 0, keys=(key,))), transaction=True)
    assert replay(core.events(c, TOK, 1), [(read1, [1, [b"3"]])]) == [3]
    assert replay(core.events(c, "", 1), []) == []
    with pytest.raises(TypeError):
        replay(core.events(c, TOK, 1.5), [])  # type: ignore[arg-type]


def test_append_hook_can_replace_or_drop() -> None:
    c = cfg(on_append=lambda sid, e: e)
    assert replay(core.append_event(c, TOK, 1), [(Compute, None)]) == 0
    steps = [(Compute, {"x": 1}), (lambda op: isinstance(op, Script) and op.args[0] == b'{"x":1}', 1)]
    assert replay(core.append_event(c, TOK, 1), steps) == 1


def test_state_patch_and_read() -> None:
    c = cfg(user_state_ms=3000)
    expected = Script(
        load("session_state_patch"), keys=("t:sess-user:{u}:state",), args=(3000, 1, "a", b"1", "b")
    )
    assert replay(core.patch_state(c, "user", "u", {"a": 1}, ["b"]), [(expected, 1)]) == 1
    app = lambda op: op.args[0] == 0  # noqa: E731 (no app TTL configured)
    assert replay(core.patch_state(c, "app", "shop", {"a": 1}), [(app, 1)]) == 1
    read = Command("HGETALL", "t:sess-app:{shop}:state", keys=("t:sess-app:{shop}:state",))
    assert replay(core.state(c, "app", "shop"), [(read, {b"a": b"1"})]) == {"a": 1}
    assert replay(core.state(c, "app", "shop"), [(read, [b"a", b"2"])]) == {"a": 2}
    with pytest.raises(ValueError, match="needs changes"):
        replay(core.patch_state(c, "app", "shop", None), [])


# --------------------------------------------------------------------------- write-behind


def test_shards_are_stable_and_spread() -> None:
    assert shard_of("abc", 4) == shard_of("abc", 4)
    assert len({shard_of(f"s{i}", 4) for i in range(100)}) == 4
    with pytest.raises(ValueError):
        shard_of("x", 0)
    assert not WriteBehind().enabled and WriteBehind(2).shard("abc") in (0, 1)
    for bad, err in (((-1,), ValueError), ((1, 0), ValueError), ((True,), TypeError)):
        with pytest.raises(err):
            WriteBehind(*bad)


def test_prime_checks_eagerly_and_resumes() -> None:
    c = cfg()
    with pytest.raises(TypeError):
        prime(core.append_event(c, 5, "x"))
    assert prime(core.append_event(c, "", "x")) is None
    flow = prime(core.update(c, TOK, {"a": 1}))
    assert flow is not None
    assert replay(flow, [(script("session_update"), 2)]) == 2
    flow = prime(core.update(c, TOK, {"a": 1}))
    assert flow is not None
    with pytest.raises(RuntimeError, match="boom"):
        replay(flow, [(script("session_update"), RuntimeError("boom"))])
    caught = prime(core.destroy_all(c, "u"))
    assert caught is not None
    with pytest.raises(ReplayMismatch):
        replay(caught, [(Batch, None)])


# --------------------------------------------------------------------------- event times, user ids, breaker


def test_event_entries_carry_their_server_time() -> None:
    assert core.split_event(b"1733500000123456\x00" + b'{"a":1}') == (1733500000.123456, b'{"a":1}')
    assert core.split_event(b'{"a":1}') == (None, b'{"a":1}')  # written before entries had times
    c = cfg()
    raw = [b"0000000000000003\x00" + b"3", b"0000000000000002\x00" + b"2", b"1"]  # newest first
    assert core.decode_events(c, raw) == [1, 2, 3]
    assert core.decode_events(c, raw, since_us=3) == [3]
    assert core.decode_events(c, raw, until_us=2) == [2]  # an entry without a time is out of any range


def test_user_ids_are_str_int_or_uuid() -> None:
    import uuid

    u = uuid.UUID(int=7)
    assert core.check_user(42) == "42" and core.check_user(u) == str(u) and core.check_user("x") == "x"
    with pytest.raises(TypeError, match="str, int or UUID, not bool"):
        core.check_user(True)
    with pytest.raises(TypeError, match="not bytes"):
        core.check_user(b"x")


def test_reads_go_through_the_breaker() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from redispatterns._core.breaker import CircuitBreaker
    from redispatterns._core.ops import Now
    from redispatterns.errors import ServerUnavailable

    breaker = CircuitBreaker(threshold=2, reset_after=1.0)
    loud, quiet = cfg(breaker=breaker), cfg(breaker=breaker, fail_closed=True)
    tok = core.new_token()
    down = RedisTimeoutError("Timeout reading")
    with pytest.raises(RedisTimeoutError):  # a closed breaker costs no clock read
        replay(core.get(loud, tok), [(Script, down), (Now(), 10.0)])
    assert breaker.failures == 1 and breaker.state == "closed"
    assert replay(core.events(quiet, tok), [(Batch, RedisConnectionError("refused")), (Now(), 10.5)]) == []
    assert breaker.state == "open"
    with pytest.raises(ServerUnavailable, match="circuit breaker is open"):
        replay(core.get(loud, tok), [(Now(), 10.6)])  # skipped: no Redis op at all
    assert replay(core.get(quiet, tok), [(Now(), 10.7)]) is None
    assert replay(core.state(quiet, "app", "a"), [(Now(), 10.8)]) == {}
    # past reset_after one read probes; its reply closes the breaker
    assert replay(core.get(loud, tok), [(Now(), 11.6), (Script, 0)]) is None
    assert breaker.state == "closed" and breaker.failures == 0
    with pytest.raises(ValueError, match="bad"):  # not an outage: raised, not counted
        replay(core.get(loud, tok), [(Script, ValueError("bad"))])
    assert breaker.failures == 0


def test_field_values_encode_exactly_as_the_codec_does() -> None:
    codec = default_codec()
    values = ["x", "é\x00", 0, -(2**63), 2**64 - 1, True, None, 1.5, [1, {"a": None}], b"\x00raw"]
    fields = core.encode_fields(codec, {str(i): v for i, v in enumerate(values)})
    assert fields[1::2] == [codec.encode(v) for v in values]
    with pytest.raises(TypeError, match="cannot encode a value of type int"):
        core.encode_fields(codec, {"big": 2**64})
    with pytest.raises(ValueError, match="NaN or infinite"):
        core.encode_fields(codec, {"nan": [float("nan")]})
