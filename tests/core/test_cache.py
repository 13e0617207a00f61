"""The cache flows, key encoding and breaker, driven with canned replies (no server)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError as RedisMaxConnectionsError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redispatterns._core import cache as core
from redispatterns._core.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from redispatterns._core.cachekey import MAX_ARGS_LEN, KeyPlan, encode_arg, function_id
from redispatterns._core.codec import JsonCodec
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import Batch, Coalesce, Command, Compute, Now, Script, Sleep, WallClock
from redispatterns.testing.replay import ANY, replay, trace


class Down(ConnectionError):
    pass


class ResponseError(Exception):
    pass


def user(user_id: int, db: Any = None) -> dict[str, Any]:
    return {"id": user_id}


def spec(**kw: Any) -> core.CacheSpec:
    plan = KeyPlan.for_function(user, ignore=kw.pop("ignore", ("db",)), tags=kw.pop("tags", ()))
    kw.setdefault("ttl", 60)
    kw.setdefault("jitter", 0.0)
    kw.setdefault("clock", lambda: NOW)
    return core.CacheSpec(keyspace=Keyspace("t:"), plan=plan, codec=JsonCodec(), **kw)


def env(value: bytes, soft_ms: int, compute_ms: int = 0, version: int = 0) -> bytes:
    return core.encode_envelope(soft_ms, compute_ms, version, value)


NOW = 1_800_000_000.0  # the wall clock the flows see, seconds
FRESH = int(NOW * 1000) + 60_000
STALE = int(NOW * 1000) - 1


def run_get(
    s: core.CacheSpec, steps: list[Any], *, breaker: CircuitBreaker | None = None, rand: float = 0.5
) -> Any:
    keys = s.keys_for((1,), {})
    flow = core.get(s, keys, user, (1,), {}, breaker or CircuitBreaker(), lambda: rand, lambda: NOW)
    return replay(flow, steps)


# --------------------------------------------------------------------------- keys


def test_keys_share_a_slot_and_are_stable() -> None:
    s = spec(tags=["user:{user_id}"])
    k = s.keys_for((7,), {})
    assert k.value.startswith("t:cache:{")
    assert slot(k.value) == slot(k.lock) == slot(core.tag_set_key(s.keyspace, k.bucket, "user:7"))
    assert k.tags == ("user:7",)
    assert s.keys_for((7,), {}) is k  # memoised
    assert s.keys_for((True,), {}).value != k.value  # never confused with 1/True
    assert s.keys_for((), {"user_id": 7}).value == k.value
    assert s.keys_for((7,), {"db": object()}).value == k.value  # ignored
    assert s.keys_for(([1],), {}).value == s.keys_for(([1],), {}).value  # unhashable: not memoised
    assert repr(k).startswith("<CallKeys")


def test_memo_is_bounded() -> None:
    s = spec()
    for i in range(5000):
        s.keys_for((i,), {})
    assert len(s._memo) <= 4096


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


class WithKey:
    def __cache_key__(self) -> Any:
        return ("with", 1)


def test_encode_arg_is_typed_and_injective() -> None:
    values = ["1", 1, 1.0, True, None, b"1", [1], (1,), {"1": 1}, {1: "1"}, Color.RED,
              uuid.UUID(int=1), dt.datetime(2026, 1, 1), dt.date(2026, 1, 1), dt.time(1, 2),
              dt.timedelta(1), decimal.Decimal("1"), Point(1, 1), {1, 2}, frozenset({3}),
              WithKey(), "a b", "a,b", bytearray(b"1")]  # fmt: skip
    encoded = [encode_arg(v) for v in values]
    assert len(set(encoded) - {encode_arg([1])}) >= len(values) - 3  # list/tuple/bytearray alike
    assert encode_arg([1]) == encode_arg((1,))
    assert encode_arg({"b": 1, "a": 2}) == encode_arg({"a": 2, "b": 1})
    assert encode_arg({2, 1}) == encode_arg({1, 2})
    with pytest.raises(TypeError, match="stable cache key"):
        encode_arg(object())
    nested: list[Any] = []
    nested.append(nested)
    with pytest.raises(TypeError, match="nests too deeply"):
        encode_arg(nested)


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyFloat(float):
    pass


def test_encode_arg_subclasses_and_mappings() -> None:
    from collections import OrderedDict

    assert encode_arg(MyInt(3)) == "i3"
    assert encode_arg(MyStr("x")) == encode_arg("x")
    assert encode_arg(MyFloat(1.5)) == "f1.5"
    assert encode_arg(OrderedDict(b=1, a=2)) == encode_arg({"a": 2, "b": 1})


@given(st.lists(st.one_of(st.integers(), st.text(), st.booleans(), st.none(), st.floats(allow_nan=False))))
def test_distinct_argument_lists_give_distinct_keys(xs: list[Any]) -> None:
    def f(*args: Any) -> None: ...

    plan = KeyPlan.for_function(f)
    a = plan.render(tuple(xs), {})
    b = plan.render((*xs, "x"), {})
    assert a != b
    assert a == plan.render(tuple(xs), {})


@given(st.tuples(st.one_of(st.integers(), st.text(), st.none(), st.floats(allow_nan=False)), st.text()))
def test_keys_straight_from_positional_arguments_equal_the_bound_ones(xs: tuple[Any, str]) -> None:
    # a plan that needs no binding renders a call's positional arguments directly: the same keys
    def f(a: Any, b: str) -> None: ...

    plan = KeyPlan.for_function(f)
    assert plan.direct and plan.render_args(xs) == plan.render(xs, {})
    s = core.CacheSpec(keyspace=Keyspace("t:"), plan=plan, codec=JsonCodec(), ttl=1)
    direct, bound = s.keys_for(xs, {}), s.keys_bound(plan.bind(xs, {}))
    assert (direct.value, direct.lock, direct.bucket) == (bound.value, bound.lock, bound.bucket)

    # binding needed: a default, an ignored parameter, a template, tags; or a call that differs
    def g(a: Any, b: str = "x") -> None: ...

    assert not KeyPlan.for_function(g).direct
    assert not KeyPlan.for_function(f, ignore=["b"]).direct
    assert not KeyPlan.for_function(f, template="{a}").direct
    assert not KeyPlan.for_function(f, tags=["t:{a}"]).direct
    assert plan.render_args(xs[:1]) is None


def test_key_plan_checks_at_decoration_time() -> None:
    def f(a: int, *rest: Any, b: int = 2, **kw: Any) -> None: ...

    with pytest.raises(ValueError, match="names zz"):
        KeyPlan.for_function(f, template="x:{zz}")
    with pytest.raises(ValueError, match="positions"):
        KeyPlan.for_function(f, template="x:{}")
    with pytest.raises(ValueError, match="malformed"):
        KeyPlan.for_function(f, template="x:{a")
    with pytest.raises(ValueError, match="tag template"):
        KeyPlan.for_function(f, tags=["t:{nope}"])
    with pytest.raises(TypeError):
        KeyPlan.for_function(f, template="")
    with pytest.raises(TypeError):
        KeyPlan.for_function(f, tags=[""])
    with pytest.raises(ValueError, match="no such parameter"):
        KeyPlan.for_function(f, ignore="zz")
    with pytest.raises(ValueError, match="reserved"):
        KeyPlan.for_function(f, name="#x")
    with pytest.raises(TypeError):
        KeyPlan.for_function(f, name="")
    plan = KeyPlan.for_function(f, template="x:{a.real}", tags="t:{b}")
    assert plan.render((5,), {}) == "k:x:5"
    assert plan.tags_for(plan.bind((5,), {})) == ("t:2",)
    assert plan.render((5, 6), {"b": 3, "z": 1}) == "k:x:5"
    assert not plan.simple
    long = KeyPlan.for_function(f).render(("x" * (MAX_ARGS_LEN + 1),), {})
    assert long.startswith("#") and len(long) == 33


def test_same_name_in_two_modules_two_keys() -> None:
    import types

    def get(x: int) -> int:
        return x

    other = types.FunctionType(get.__code__, get.__globals__, "get", get.__defaults__, get.__closure__)
    other.__qualname__ = get.__qualname__
    other.__module__ = "another.module"
    a = core.CacheSpec(keyspace=Keyspace("t:"), plan=KeyPlan.for_function(get), codec=JsonCodec(), ttl=1)
    b = core.CacheSpec(keyspace=Keyspace("t:"), plan=KeyPlan.for_function(other), codec=JsonCodec(), ttl=1)
    assert a.keys_for((1,), {}).value != b.keys_for((1,), {}).value
    assert "another.module." in b.keys_for((1,), {}).value


def test_methods_leave_self_out_and_functions_are_named_fully() -> None:
    class Repo:
        def get(self, x: int) -> int:
            return x

    plan = KeyPlan.for_function(Repo.get)
    assert plan.names == ("x",)
    assert plan.render((Repo(), 1), {}) == plan.render((Repo(), 1), {})
    assert function_id(Repo.get).endswith(
        "test_methods_leave_self_out_and_functions_are_named_fully.<locals>.Repo.get"
    )


# --------------------------------------------------------------------------- envelope


def test_envelope_round_trip_and_bad_values() -> None:
    codec = JsonCodec()
    e = core.decode_entry(env(b'{"a":1}', 5, 6, 7), codec)
    assert e == core.Entry({"a": 1}, 5, 6, 7)
    assert core.decode_entry(env(b"null", 5), codec) == core.Entry(None, 5, 0, 0)
    assert core.decode_entry("\x011:2:3|[1]", codec) == core.Entry([1], 1, 2, 3)
    for bad in (b"plain", b"\x01nobar", b"\x01x:y:z|1", b"\x011:2:3|{bad"):
        assert core.decode_entry(bad, codec) is None
        assert core._read(bad, codec) is None
    assert core._read(env(b"\xffraw", 1), codec) == (b"raw", 1, 0)
    # a header seen before under a key: only the payload is decoded, whatever it now holds
    heads: dict[str, Any] = {}
    assert core._read(env(b"[1]", 5, 6), codec, "k", heads) == ([1], 5, 6)
    assert heads["k"][0] == b"\x015:6:0|"
    assert core._read(env(b"[2]", 5, 6), codec, "k", heads) == ([2], 5, 6)  # same header
    assert core._read(env(b"\xffraw", 5, 6), codec, "k", heads) == (b"raw", 5, 6)  # bytes marker
    assert core._read(env(b"{bad", 5, 6), codec, "k", heads) is None  # no longer decodes
    assert core._read(env(b"[3]", 9, 0), codec, "k", heads) == ([3], 9, 0)  # a new header: parsed
    assert heads["k"][0] == b"\x019:0:0|"
    assert core._read(b"\x019:0:0|", codec, "k", heads) is None  # nothing after the header
    assert core._read(b"plain", codec, "k", heads) is None
    full = {str(i): (b"\x00", 0, 0, 0, 0.0) for i in range(core._HEADS_MAX)}  # bounded: starts over
    assert core._read(env(b"1", 1), codec, "new", full) == (1, 1, 0) and list(full) == ["new"]


def test_stale_window_and_outage_detection() -> None:
    assert core.stale_ms_for(60, None) == 6000
    assert core.stale_ms_for(1, None) == 1000
    assert core.stale_ms_for(60, 0) == 0
    assert core.is_outage(Down()) and core.is_outage(TimeoutError())
    assert not core.is_outage(ResponseError())

    class TimeoutErrorLike(Exception):
        pass

    TimeoutErrorLike.__name__ = "TimeoutError"
    assert not core.is_outage(TimeoutErrorLike())  # classified by class, never by name
    assert core.is_outage(RedisTimeoutError()) and core.is_outage(RedisConnectionError())


# --------------------------------------------------------------------------- get


def test_hit_is_one_get() -> None:
    s = spec()
    assert run_get(s, [(Command("GET", s.keys_for((1,), {}).value.encode()), env(b'{"id":1}', FRESH))]) == (
        {"id": 1},
        core.HIT,
    )


def test_miss_and_undecodable_ask_for_a_fill() -> None:
    s = spec()
    assert run_get(s, [(Command, None)]) == (core.NOT_FOUND, core.MISS)
    assert run_get(s, [(Command, b"junk")]) == (core.NOT_FOUND, core.UNDECODABLE)
    assert repr(core.NOT_FOUND) == "NOT_CACHED"


def test_redis_error_falls_back_and_counts_against_the_breaker() -> None:
    s = spec()
    b = CircuitBreaker(threshold=1)
    got = run_get(s, [(Command, Down()), (Now(), 5.0)], breaker=b)
    assert got == (core.NOT_FOUND, core.ERROR)
    assert b.state == OPEN and isinstance(b.last_error, Down)
    # open: Redis is skipped
    assert run_get(s, [(Now(), 5.1)], breaker=b) == (core.NOT_FOUND, core.BYPASS)
    # after reset_after: a probe reaches Redis; its success closes the breaker
    assert run_get(s, [(Now(), 7.0), (Command, None)], breaker=b) == (core.NOT_FOUND, core.MISS)
    assert b.state == CLOSED
    # a non-outage error falls back but does not count
    b2 = CircuitBreaker(threshold=1)
    assert run_get(s, [(Command, ResponseError())], breaker=b2) == (core.NOT_FOUND, core.ERROR)
    assert b2.state == CLOSED
    # the shell's fallback just runs the function
    assert replay(core.fallback(Compute(user, (1,)), core.BYPASS), [(Compute, 3)]) == (3, core.BYPASS)


class MaxConnectionsError(RedisMaxConnectionsError):
    pass


def test_pool_exhaustion_waits_and_retries() -> None:
    s = spec()
    steps = [(Command, MaxConnectionsError()), (Sleep, 0.0), (Command, MaxConnectionsError()), (Sleep, 0.0),
             (Command, env(b"1", FRESH))]  # fmt: skip
    assert run_get(s, steps) == (1, core.HIT)
    assert core.is_backpressure(MaxConnectionsError()) and not core.is_backpressure(Down())
    # it gives up after a bounded wait, and then it is an outage
    many: list[Any] = [(Command, MaxConnectionsError())]
    for _ in range(core._BACKPRESSURE_TRIES):
        many += [(Sleep, 0.0), (Command, MaxConnectionsError())]
    b = CircuitBreaker(threshold=1)
    assert run_get(s, [*many, (Now(), 1.0)], breaker=b) == (core.NOT_FOUND, core.ERROR)
    assert b.state == OPEN
    # the fill's lease retries the same way
    steps = [lease(MaxConnectionsError()), (Sleep, 0.0), lease(env(b"2", FRESH))]
    assert run_fill(s, steps) == (2, core.HIT)


def test_stale_value_one_refresher() -> None:
    s = spec()
    k = s.keys_for((1,), {})
    stale = env(b'"old"', STALE)
    # lost the lease: the stale value is served
    assert run_get(s, [(Command, stale), (Command, None)]) == ("old", core.STALE)
    # won it: compute, store under the lease
    steps = [
        (Command, stale),
        (lambda op: op.args[:2] == ("SET", k.lock) and "NX" in op.args, b"OK"),
        (Now(), 1.0),
        (Compute, "new"),
        (Now(), 1.25),
        (lambda op: type(op) is Script and op.args[0] == b'\x011800000060000:250:0|"new"', 1),  # compute ms
    ]
    assert run_get(s, steps) == ("new", core.REFRESHED)
    # the lease command failed: serve stale
    assert run_get(s, [(Command, stale), (Command, Down()), (Now(), 1.0)]) == ("old", core.STALE)
    # read-only mount: stale served, nothing written
    ro = spec(can_write=False)
    assert run_get(ro, [(Command, stale)]) == ("old", core.STALE)


def test_refresh_failure_serves_stale_or_raises() -> None:
    s = spec()
    stale = env(b'"old"', STALE)
    unlock = (lambda op: isinstance(op, Script) and op.script.name == "cache_unlock", 1)
    steps = [(Command, stale), (Command, b"OK"), (Now(), 1.0), (Compute, RuntimeError("db")), unlock]
    assert run_get(s, steps) == ("old", core.STALE_ERROR)
    strict = spec(stale_if_error=False)
    with pytest.raises(RuntimeError, match="db"):
        run_get(strict, steps)
    # unlock itself failing is quiet
    steps2 = [*steps[:-1], (unlock[0], Down())]
    assert run_get(s, steps2) == ("old", core.STALE_ERROR)


def test_xfetch_refreshes_near_expiry_in_proportion_to_compute_time() -> None:
    s = spec()
    near = env(b'"v"', int(NOW * 1000) + 50, compute_ms=100)
    far = env(b'"v"', int(NOW * 1000) + 10_000_000, compute_ms=100)
    # rand 0.5: gap = 100 * ln 2 ~ 69 ms > 50 ms left -> try to refresh (lease lost -> value)
    assert run_get(s, [(Command, near), (Command, None)]) == ("v", core.HIT)
    assert run_get(s, [(Command, far)]) == ("v", core.HIT)
    # rand close to 1: gap ~ 0 -> no early refresh
    assert run_get(s, [(Command, near)], rand=0.999) == ("v", core.HIT)
    # beta 0: never
    assert run_get(spec(beta=0), [(Command, near)]) == ("v", core.HIT)
    # an early refresh that fails serves the (still fresh) value
    steps = [(Command, near), (Command, b"OK"), (Now(), 1.0), (Compute, RuntimeError()), (Script, 1)]
    assert run_get(spec(stale_if_error=False), steps) == ("v", core.STALE_ERROR)


# --------------------------------------------------------------------------- fill


def run_fill(s: core.CacheSpec, steps: list[Any], **kw: Any) -> Any:
    keys = s.keys_for((1,), {})
    flow = core.fill(s, keys, Compute(user, (1,)), kw.pop("breaker", CircuitBreaker()), lambda: 0.5, **kw)
    return replay(flow, steps)


def lease(reply: Any) -> tuple[Any, Any]:
    return (lambda op: isinstance(op, Command) and op.args[-1] == "GET" and op.args[3] == "NX", reply)


OURS = None  # the lease's nil: the key was absent, our lease is in it now
THEIRS = b"\x02someone"  # another caller's lease in the value's key


def replace(reply: Any) -> tuple[Any, Any]:
    """The lease put over a value that is not ours: a plain SET (no NX), our lease as its value."""

    def put_over(op: Any) -> bool:
        args = op.args if type(op) is Command else ()
        return args[:1] == ("SET",) and "NX" not in args and str(args[2]).startswith("\2")

    return (put_over, reply)


def store(reply: Any) -> tuple[Any, Any]:
    """The store: ``cache_fill`` for a cold fill holding its lease in the value's key, else
    ``cache_store``."""
    return (lambda op: isinstance(op, Script) and op.script.name in ("cache_store", "cache_fill"), reply)


def test_fill_wins_the_lease_computes_and_stores() -> None:
    s = spec()
    steps = [lease(OURS), (Now(), 1.0), (Compute, {"id": 1}), (Now(), 1.01), store(1)]
    assert run_fill(s, steps) == ({"id": 1}, core.MISS)
    # lease lost before the store (invalidated or written through meanwhile): uncached
    steps[-1] = store(0)
    assert run_fill(s, steps) == ({"id": 1}, core.UNCACHED)


def test_cold_fill_stores_with_the_short_script_and_falls_back_when_its_lease_is_gone() -> None:
    s = spec()
    fill = (lambda op: isinstance(op, Script) and op.script.name == "cache_fill", 1)
    ops, result = trace(
        core.fill(s, s.keys_for((1,), {}), Compute(user, (1,)), CircuitBreaker(), lambda: 0.5),
        lambda op: (
            OURS
            if isinstance(op, Command)
            else (1 if isinstance(op, Script) else ({"id": 1} if isinstance(op, Compute) else 1.0))
        ),
    )
    assert result == ({"id": 1}, core.MISS)
    stores = [op for op in ops if isinstance(op, Script)]
    assert [op.script.name for op in stores] == ["cache_fill"]
    # one key (the value's, holding our lease) and three arguments: envelope, hard TTL, lease
    (st,) = stores
    assert st.keys == (s.keys_for((1,), {}).pair[0],) and len(st.args) == 3
    assert st.args[0] == b'\x011800000060000:0:0|{"id":1}' and st.args[1] == b"66000"
    assert str(st.args[2]).startswith("\x02")
    # our lease is gone (-1): cache_store decides, with the lease key and the writer's clock
    full = (lambda op: isinstance(op, Script) and op.script.name == "cache_store" and len(op.keys) == 2, 0)
    steps = [lease(OURS), (Now(), 1.0), (Compute, {"id": 1}), (Now(), 1.0), (fill[0], -1), full]
    assert run_fill(s, steps) == ({"id": 1}, core.UNCACHED)
    steps[-1] = (full[0], 1)
    assert run_fill(s, steps) == ({"id": 1}, core.MISS)


def test_fill_waits_for_the_holder_then_reads_its_value() -> None:
    s = spec()
    steps = [
        lease(THEIRS),
        (Now(), 1.0),
        (Sleep, 1.0),
        lease(THEIRS),
        (Now(), 1.01),
        (Sleep, 1.01),
        lease(env(b"7", FRESH)),
    ]
    assert run_fill(s, steps) == (7, core.HIT)


def test_fill_after_the_wait_computes_anyway() -> None:
    s = spec(lock_wait=0.5)
    steps = [lease(THEIRS), (Now(), 1.0), (Sleep, 1.0), lease(THEIRS), (Now(), 1.6), (Now(), 1.6),
             (Compute, 3), (Now(), 1.7), store(1)]  # fmt: skip
    assert run_fill(s, steps) == (3, core.MISS)


def test_fill_replaces_an_undecodable_value_and_handles_failures() -> None:
    s = spec()
    # the value that arrived is undecodable: retry the lease ignoring it
    steps = [lease(b"junk"), replace(True), (Now(), 1.0), (Compute, 1), (Now(), 1.0), store(1)]
    assert run_fill(s, steps) == (1, core.MISS)
    # Redis fails: compute, uncached
    b = CircuitBreaker(threshold=1)
    assert run_fill(s, [lease(Down()), (Now(), 1.0), (Compute, 1)], breaker=b) == (1, core.ERROR)
    assert b.state == OPEN
    # the function raises: the lease is released, the error propagates
    with pytest.raises(KeyError):
        run_fill(s, [lease(OURS), (Now(), 1.0), (Compute, KeyError("x")), (Script, 1)])
    # read-only: compute only
    assert run_fill(spec(can_write=False), [(Compute, 5)]) == (5, core.UNCACHED)


def test_store_condition_ttl_codec_and_tags() -> None:
    s = spec(condition=lambda r: r is not None)
    steps = [lease(OURS), (Now(), 1.0), (Compute, None), (Now(), 1.0), (Compute, False), (Script, 1)]
    assert run_fill(s, steps) == (None, core.UNCACHED)  # condition said no; lease released
    t = spec(ttl=lambda r: None)
    steps = [lease(OURS), (Now(), 1.0), (Compute, 1), (Now(), 1.0), (Compute, None), (Script, 1)]
    assert run_fill(t, steps) == (1, core.UNCACHED)
    steps = [lease(OURS), (Now(), 1.0), (Compute, {1, 2}), (Now(), 1.0), (Script, 1)]
    assert run_fill(spec(), steps) == ({1, 2}, core.UNENCODABLE)
    tagged = spec(tags=["user:{user_id}", "all"])
    ops, result = trace(
        core.fill(tagged, tagged.keys_for((1,), {}), Compute(user, (1,)), CircuitBreaker(), lambda: 0.0),
        lambda op: (
            1
            if isinstance(op, Script)
            else OURS
            if isinstance(op, Command) and op.options
            else (1.0 if isinstance(op, Now) else ([1, 1, 1] if isinstance(op, Batch) else {"id": 1}))
        ),
    )
    assert result == ({"id": 1}, core.MISS)
    # the tags' directories and the store: one batch, one round trip
    batch = next(op for op in ops if isinstance(op, Batch))
    assert [c.args[0] for c in batch.ops[:2]] == ["SADD", "SADD"] and not batch.raise_on_error
    st_ = batch.ops[2]
    assert isinstance(st_, Script) and st_.script.name == "cache_store"
    # a fill: four arguments, the envelope dated by the writer's clock (NOW + the 60 s TTL)
    assert st_.args[0] == b'\x011800000060000:0:0|{"id":1}' and st_.args[1] == b"66000"
    assert len(st_.keys) == 4 and len(st_.args) == 4 and st_.args[3] == b"1800000000000"
    assert not any(isinstance(op, Script) and op.script.name == "cache_store" for op in ops)  # not sent alone
    # a store failure counts as an error
    one = spec(tags=["all"])
    steps = [lease(OURS), (Now(), 1.0), (Compute, 1), (Now(), 1.0), (Batch, [1, Down()]), (Now(), 2.0)]
    assert run_fill(one, steps) == (1, core.ERROR)
    # a registration failed but the value was written: the value is deleted again (never an
    # entry its tag's directory does not lead to), and the store is an error
    k1 = one.keys_for((1,), {})
    dele = (lambda op: isinstance(op, Command) and op.args == ("DEL", k1.value), 1)
    steps = [lease(OURS), (Now(), 1.0), (Compute, 1), (Now(), 1.0), (Batch, [Down(), 1]), dele, (Now(), 2.0)]
    assert run_fill(one, steps) == (1, core.ERROR)


# --------------------------------------------------------------------------- write path


def test_put_invalidate_peek_refresh_write_back() -> None:
    s = spec()
    k = s.keys_for((1,), {})
    b = CircuitBreaker()
    assert replay(core.put(s, k, {"a": 1}, 3, b, lambda: 0.0), [store(1)]) == "ok"
    assert replay(core.put(s, k, {"a": 1}, 3, b, lambda: 0.0), [store(0)]) == "skip"
    # no clock given: the store asks the runner for the wall clock, and dates the envelope by it
    dated = (lambda op: isinstance(op, Script) and op.args[0] == b"\x011800000060000:0:0|1", 1)
    assert replay(core.put(spec(clock=None), k, 1, 0, b, lambda: 0.0), [(WallClock(), NOW), dated]) == "ok"
    inv = (lambda op: isinstance(op, Script) and op.keys == (k.value, k.lock) and op.args == (10_000,), 1)
    assert replay(core.invalidate(s, k), [inv]) == 1
    assert replay(core.peek(s, k), [(Command, None)]) is core.NOT_FOUND
    assert replay(core.peek(s, k), [(Command, b"junk")]) is core.NOT_FOUND
    assert replay(core.peek(s, k), [(Command, env(b"null", 1))]) is None
    assert replay(core.refresh(s, k, Compute(user, (1,)), b, lambda: 0.0),
                  [(Now(), 1.0), (Compute, 9), (Now(), 1.0), store(1)]) == 9  # fmt: skip
    wb = core.write_back(s, k, {"v": 2}, lambda r: r["v"], lambda v: v, "update", b, lambda: 0.0)
    stored_v2 = (lambda op: isinstance(op, Script) and op.args[4:] == (b"put", b"2"), 1)  # version as bytes
    assert replay(wb, [(Compute, 2), (Compute, 2), stored_v2]) == "ok"
    wb = core.write_back(s, k, 1, None, None, "invalidate", b, lambda: 0.0)
    assert replay(wb, [(Script, 1)]) == "invalidated"
    wb = core.write_back(s, k, 1, None, None, "invalidate", b, lambda: 0.0)
    assert replay(wb, [(Script, Down()), (Now(), 1.0)]) == "error"


def test_invalidate_tags_pops_each_bucket() -> None:
    ks = Keyspace("t:")
    steps = [
        (Command("SMEMBERS", core.tag_dir_key(ks, "u")), [b"3", b"1"]),
        (Command("SPOP", core.tag_set_key(ks, 1, "u"), 500), [b"t:cache:{1}:a", b"t:cache:{1}:b"]),
        (lambda op: op.args[0] == "UNLINK" and len(op.args) == 3, 2),
        (Command("SPOP", core.tag_set_key(ks, 1, "u"), 500), []),
        (Command("SPOP", core.tag_set_key(ks, 3, "u"), 500), None),
        (Command("SMEMBERS", core.tag_dir_key(ks, "v")), []),
    ]
    assert replay(core.invalidate_tags(ks, ["u", "v"]), steps) == 2


# --------------------------------------------------------------------------- breaker


def test_breaker_state_machine() -> None:
    b = CircuitBreaker(threshold=2, reset_after=1.0)
    assert b.allow(0.0)
    assert not b.failure(0.0) and b.state == CLOSED
    b.success()
    assert b.failures == 0
    b.failure(0.0)
    assert b.failure(0.1) and b.state == OPEN and b.trips == 1
    assert not b.allow(0.5)
    assert b.allow(1.2) and b.state == HALF_OPEN  # the probe
    assert not b.allow(1.3)  # one probe at a time
    assert b.allow(2.3)  # the probe seems lost: another
    assert b.failure(2.4) and b.state == OPEN and b.trips == 2
    assert b.allow(3.5)
    b.success()
    assert b.state == CLOSED
    b.failure(4.0)
    b.reset()
    assert b.state == CLOSED and b.failures == 0
    assert "closed" in repr(b)
    for bad in ({"threshold": 0}, {"threshold": True}, {"reset_after": 0}):
        with pytest.raises(ValueError):
            CircuitBreaker(**bad)
    with pytest.raises(TypeError):
        CircuitBreaker(reset_after="1")  # type: ignore[arg-type]


def test_replay_sanity_any() -> None:
    s = spec()
    assert run_get(s, [(ANY, None)]) == (core.NOT_FOUND, core.MISS)


def test_release_and_tokens() -> None:
    s = spec()
    k = s.keys_for((1,), {})
    unlock = (lambda op: isinstance(op, Script) and op.args == ("t",) and op.keys == (k.lock,), 1)
    assert replay(core.release(k, "t"), [unlock]) is None  # a refresh's lease: its own key
    # a cold fill's lease lives in the value's own key
    unlock_value = (lambda op: isinstance(op, Script) and op.args == ("\x02t",) and op.keys == k.pair[:1], 1)
    assert replay(core.release(k, "\x02t"), [unlock_value]) is None
    assert replay(core.release(k, "t"), [(Script, Down())]) is None  # quiet
    a, b = core.new_token(), core.new_token()
    assert a != b and a[:13] == b[:13] and len(a) >= 14  # one random prefix per process, then a counter
    assert a[:1] == "\x02"  # stored in the value's key: never taken for a value
    core._new_process()  # what a forked child runs first: a new prefix
    assert core.new_token()[:13] != a[:13]
    steps = [(lambda op: isinstance(op, Command) and op.args[2] == "mine", OURS), (Now(), 1.0), (Compute, 1),
             (Now(), 1.0), store(1)]  # fmt: skip
    flow = core.fill(s, k, Compute(user, (1,)), CircuitBreaker(), lambda: 0.5, token="mine")
    assert replay(flow, steps) == (1, core.MISS)


def test_a_waiting_fill_adopts_a_lease_held_in_this_process() -> None:
    # a caller of this process took the lease but follows this fill in the single-flight: the
    # fill computes under that lease instead of waiting it out
    s = spec()
    k = s.keys_for((1,), {})
    s.held[k.value] = "theirs"
    mine = (
        lambda op: isinstance(op, Script) and op.script.name == "cache_store" and op.args[2] == "theirs",
        1,
    )
    steps = [lease(THEIRS), (Now(), 1.0), (Compute, 5), (Now(), 1.0), mine]
    assert replay(core.fill(s, k, Compute(user, (1,)), CircuitBreaker(), lambda: 0.5), steps) == (
        5,
        core.MISS,
    )
    assert s.held == {}
    # a value of another type under the key: the lease's SET says WRONGTYPE, a corrupt value...
    before = s.corrupt
    wrongtype = RedisResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    leased_get = core.get(s, k, user, (1,), {}, CircuitBreaker(), lambda: 0.5, lambda: NOW, "\x02tok")
    got = replay(leased_get, [lease(wrongtype)])
    assert got == (core.NOT_FOUND, core.UNDECODABLE) and s.corrupt == before + 1
    # ...which a fill replaces: our lease put over it, then compute and store
    steps = [replace(True), (Now(), 1.0), (Compute, 5), (Now(), 1.0), store(1)]
    assert run_fill(s, steps, replace=True) == (5, core.MISS)
    # a GET of a key this process saw fresh meets another caller's lease: a miss that waits
    s.present[k.value] = NOW + 60
    assert run_get(s, [(Command, THEIRS)]) == (core.NOT_FOUND, core.MISS) and k.value not in s.present


def test_statuses_and_not_cached_are_honest_values() -> None:
    ok: str = core.StoreStatus.OK
    assert ok == "ok" and str(core.StoreStatus.CODEC) == "codec"
    assert repr(core.StoreStatus.SKIP) == "<StoreStatus.SKIP: 'skip'>"
    assert repr(core.NOT_FOUND) == "NOT_CACHED" and type(core.NOT_FOUND) is core.NotCached
    assert list(core.NotCached) == [core.NOT_FOUND]  # a singleton
    import pickle

    assert pickle.loads(pickle.dumps(core.NOT_FOUND)) is core.NOT_FOUND


# --------------------------------------------------------------------------- one call


def test_a_call_is_the_read_path_then_one_coalesced_fill_or_fallback() -> None:
    s = spec()
    keys = s.keys_for((1,), {})
    flights = object()  # the runner's table; opaque to the flow

    def run_call(
        steps: list[Any], breaker: CircuitBreaker | None = None, leases: list[str] | None = None
    ) -> Any:
        flow = core.call(
            s, keys, user, (1,), {}, breaker or CircuitBreaker(), lambda: 0.5, lambda: NOW, flights, leases
        )
        return replay(flow, steps)

    # a key this process has not seen fresh: the lease script, which returns the value...
    assert keys.value not in s.present
    assert run_call([lease(env(b'{"id":1}', FRESH))]) == ({"id": 1}, core.HIT)
    assert s.present[keys.value] == FRESH / 1000  # ...and is remembered until its soft expiry
    # a key seen fresh: one GET; a hit never coalesces
    assert run_call([(Command, env(b'{"id":1}', FRESH))]) == ({"id": 1}, core.HIT)
    # under the header seen last time the GET's reply is decoded inline, whatever its payload...
    assert s.heads[keys.value][4] == FRESH / 1000  # (fresh until then, no compute time, JSON)
    assert run_call([(Command, env(b'{"id":2}', FRESH))]) == ({"id": 2}, core.HIT)
    assert run_call([(Command, env(b"\xffraw", FRESH))]) == (b"raw", core.HIT)  # bytes: parsed
    big = "x" * 5000  # past a few KB the payload is decoded from a memoryview, not a copy
    assert run_call([(Command, env(b'"%s"' % big.encode(), FRESH))]) == (big, core.HIT)
    assert core._read(env(b'"%s"' % big.encode(), FRESH), s.codec) == (big, FRESH, 0)
    corrupt = s.corrupt
    assert run_call([(Command, env(b"{bad", FRESH)), (Coalesce, ((1, core.MISS), True))]) == (1, core.MISS)
    assert s.corrupt == corrupt + 1  # ...and one that no longer decodes is counted, then replaced
    # a compute time for XFetch to weigh: never inlined
    assert run_call([(Command, env(b"[5]", FRESH, 9))]) == ([5], core.HIT) and s.heads[keys.value][4] == 0
    assert run_call([(Command, env(b"[6]", FRESH, 9))]) == ([6], core.HIT)

    def fill_of(op: Any, leased: bool = False) -> bool:
        if not (isinstance(op, Coalesce) and op.flights is flights and op.key == keys.value):
            return False
        flow: Any = op.make()  # the flow the single-flight would run: a fill, leased or not
        try:
            return flow.gi_code is core.fill.__code__ and flow.gi_frame.f_locals["leased"] is leased
        finally:
            flow.close()

    # the GET found nothing after all (evicted, invalidated elsewhere): forgotten, then a fill
    leases: list[str] = []
    assert run_call([(Command, None), (fill_of, (({"id": 1}, core.MISS), True))], leases=leases) == (
        {"id": 1},
        core.MISS,
    )
    assert len(leases) == 1  # the fill's lease token, for the shell to release on cancellation
    assert keys.value not in s.present
    # a cold miss: the lease script granted the lease, so the fill computes at once (2 round trips)
    seen: dict[str, Any] = {}

    def leased_fill(op: Any) -> bool:
        seen["held"] = dict(s.held)  # while the fill runs, this process's lease is findable
        return fill_of(op, leased=True)

    leases = []
    assert run_call([lease(OURS), (leased_fill, (({"id": 1}, core.MISS), True))], leases=leases) == (
        {"id": 1},
        core.MISS,
    )
    assert seen["held"] == {keys.value: leases[0]} and s.held == {}  # dropped afterwards
    # another caller holds the lease: a fill that waits for it
    assert run_call([lease(THEIRS), (fill_of, (({"id": 1}, core.HIT), True))]) == ({"id": 1}, core.HIT)
    # a follower: "coalesced", unless the leader met an outage
    follows = (lambda op: fill_of(op, leased=True), (({"id": 1}, core.MISS), False))
    assert run_call([lease(OURS), follows]) == (
        {"id": 1},
        "coalesced",
    )
    assert core.coalesced(core.ERROR) == core.ERROR and core.coalesced(core.BYPASS) == core.BYPASS
    # the breaker is open: the fallback is coalesced too
    b = CircuitBreaker(threshold=1)
    assert run_get(s, [(Command, Down()), (Now(), 5.0)], breaker=b) == (core.NOT_FOUND, core.ERROR)

    def fallback_of(op: Any) -> bool:
        make: Any = getattr(op, "make", None)
        return isinstance(op, Coalesce) and make.func is core.fallback

    assert run_call([(Now(), 5.0), (fallback_of, ((3, core.BYPASS), False))], breaker=b) == (3, core.BYPASS)
