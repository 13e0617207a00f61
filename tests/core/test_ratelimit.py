"""Rate-limit flows, policies, decisions and oracles, without a server."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redispatterns._core import ratelimit as core
from redispatterns._core.keys import Keyspace
from redispatterns._core.ops import Command, Compute, Now, Script, Sleep
from redispatterns.errors import RateLimited
from redispatterns.http import client_address
from redispatterns.testing.replay import ReplayMismatch, replay
from tests import ratelimit_oracles as oracles

SW = core.Policy.sliding(3, 10)
TB = core.Policy.token_bucket(2, 4, per=1)
FW = core.Policy.fixed(5, 60)
SC = core.Policy.sliding_counter(4, 2)
KEYS = core.state_keys(Keyspace("t:"), "rl", "user:1", (SW, TB))


def reply_for(*states: tuple[int, int, int, int], now: int = 10**15) -> list[int]:
    allowed = int(all(s[0] for s in states))
    return [now, allowed, *(x for s in states for x in s)]


# --------------------------------------------------------------------------- policies


def test_policy_constructors_and_names() -> None:
    assert (SW.algorithm, SW.limit, SW.period_us, SW.name) == ("sliding", 3, 10_000_000, "3-per-10s")
    assert (TB.limit, TB.period_us, TB.window) == (4, 500_000, 2.0)
    assert TB.name == "bucket-4-2-per-1s"
    assert core.Policy.token_bucket(2.5).limit == 3  # capacity defaults to ceil(rate)
    assert core.Policy.token_bucket(7, 1, per=13).period_us == 1_857_143  # rounded to whole µs
    assert FW.name == "5-per-60s-fixed" and FW.window_us == 60_000_000
    assert core.Policy.sliding(1, 0.25).name == "1-per-0.25s"
    assert SW.key_suffix == "sw:3:10000000" and TB.key_suffix == "tb:4:500000"
    assert SW.header_item() == '"3-per-10s";q=3;w=10'
    assert core.Policy.sliding(1, 0.25).header_item().endswith("w=1")  # never w=0


@pytest.mark.parametrize(
    ("build", "exc"),
    [
        (lambda: core.Policy.sliding(0, 1), ValueError),
        (lambda: core.Policy.sliding(True, 1), TypeError),
        (lambda: core.Policy.sliding(1.5, 1), TypeError),  # type: ignore[arg-type]
        (lambda: core.Policy.sliding(1, 0), ValueError),
        (lambda: core.Policy.sliding(1, float("inf")), ValueError),
        (lambda: core.Policy.sliding(1, "1"), TypeError),  # type: ignore[arg-type]
        (lambda: core.Policy.sliding(1, 1e-9), ValueError),
        (lambda: core.Policy.fixed(1, 11 * 366 * 86400), ValueError),
        (lambda: core.Policy.token_bucket(2e6), ValueError),
        (lambda: core.Policy.token_bucket(1, 0), ValueError),
        (lambda: core.Policy.token_bucket(1, per=-1), ValueError),
        (lambda: core.Policy.sliding(1, 1, name='a"b'), ValueError),
        (lambda: core.Policy.sliding(1, 1, name="a\nb"), ValueError),
        (lambda: core.Policy("leaky", 1, 1, "x"), ValueError),  # type: ignore[arg-type]
        (lambda: core.Policy("sliding", 1, 1.5, "x"), TypeError),  # type: ignore[arg-type]
        (lambda: core.check_cost(-1), ValueError),
        (lambda: core.check_cost(1.0), TypeError),
        (lambda: core.check_cost(False), TypeError),
    ],
)
def test_bad_policies_and_costs(build: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        build()


def test_state_keys_share_the_subject_tag() -> None:
    assert KEYS == ("t:rl:{user:1}:sw:3:10000000", "t:rl:{user:1}:tb:4:500000")


# --------------------------------------------------------------------------- the hit flow


def test_hit_sends_one_script_with_every_policy() -> None:
    def expected(op: Any) -> bool:
        assert isinstance(op, Script) and op.script.name == "ratelimit_multi"
        assert op.keys == KEYS
        assert op.args == (b"31", b"10000000", b"42", b"500000", b"2", b"1")  # limit * 10 + kind, period
        return True

    d = replay(
        core.hit(KEYS, (SW, TB), 2, subject="user:1"),
        [(expected, reply_for((1, 1, 0, 10_000_000), (1, 2, 0, 1_000_000)))],
    )
    assert d.allowed and d.remaining == 1 and d.limit == 3 and d.key == "user:1" and d.cost == 2
    assert d.retry_after == 0.0 and d.reset_after == 10.0 and d.violated == ()
    assert d.policy is SW and bool(d)


def test_one_policy_sends_its_own_script_with_its_arguments_and_the_virtual_clock() -> None:
    def expected(op: Any) -> bool:
        return bool(op.script.name == "ratelimit_bucket" and op.args == (4, 500_000, 0, core.MODE_PEEK, 123))

    d = replay(core.hit(KEYS[1:], (TB,), 0, mode=core.MODE_PEEK, now_us=123), [(expected, [123, 4, 0, 0])])
    assert d.allowed and d.remaining == 4 and d.now_us == 123
    names = {p.algorithm: core.script_op(KEYS[:1], (p,), 1).script.name for p in (SW, TB, FW, SC)}
    assert names == {"sliding": "ratelimit_log", "token_bucket": "ratelimit_bucket",
                     "fixed": "ratelimit_fixed", "sliding_counter": "ratelimit_counter"}  # fmt: skip
    assert core.script_op(KEYS[:1], (SW,), 3, core.MODE_PENALTY).args == (b"3", b"10000000", b"3", b"2")
    # the common hit (cost 1, hit mode, server time) sends limit and period alone, as bytes
    assert core.script_op(KEYS[:1], (SW,), 1).args == (b"3", b"10000000")
    assert core.script_op(KEYS[:1], (SW,), 1, core.MODE_PEEK).args == (b"3", b"10000000", b"1", b"0")


def test_the_plain_check_flow_reads_one_reply() -> None:
    op = core.script_op(KEYS[:1], (SW,), 1)
    d = replay(core.check(op, (SW,), 1, "user:1", core.MODE_HIT), [(op, [7, 2, 0, 10_000_000])])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us, d.now_us) == (
        True,
        2,
        0,
        10_000_000,
        7,
    )
    denied = replay(core.check(op, (SW,), 1, "u", core.MODE_HIT), [(op, [7, 0, 2_500_000, 9_000_000])])
    assert not denied.allowed and denied.retry_after == 2.5 and denied.violated == (SW.name,)
    never = replay(core.check(op, (SW,), 4, "u", core.MODE_HIT), [(op, [7, 3, -1, 0])])
    assert not never.allowed and never.retry_after is None


def _states(d: core.Decision) -> list[tuple[Any, ...]]:
    return [(s.policy, s.allowed, s.remaining, s.retry_after_us, s.reset_after_us) for s in d.policies]


def test_short_replies_decode_as_the_full_ones() -> None:
    """The multi script's admitted hit (one integer per policy, as each policy's own script
    answers) and the sliding log's denied hit ([retry, reset]) decode to the decision the full
    table gives; a virtual clock's now comes from the op's arguments."""
    pols = (SW, TB, FW, SC)
    keys = core.state_keys(Keyspace("t:"), "rl", "user:1", pols)
    short = [1, 700_000, 2 * 60_000_000 + 59_999_999, 1 * 4_000_000 + 1_499_999]
    full = reply_for((1, 1, 0, 10_000_000), (1, 2, 0, 700_000), (1, 3, 0, 60_000_000), (1, 1, 0, 1_500_000))
    want = core.decide("u", 1, pols, full)
    for now_us in (None, 123):
        op = core.script_op(keys, pols, 1, core.MODE_HIT, now_us)
        d = replay(core.check(op, pols, 1, "u", core.MODE_HIT), [(op, short)])
        assert _states(d) == _states(want) and d.now_us == (now_us or 0)
        got = (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us, d.limit)
        assert got == (True, 1, 0, 10_000_000, 3)
        assert d.policy is SW  # the tightest: 1 left (SW, SC), and of those the longest reset
    assert _states(core.decide("u", 1, pols, short)) == _states(want)
    for now_us in (None, 77):
        op = core.script_op(KEYS[:1], (SW,), 1, core.MODE_HIT, now_us)
        d = replay(core.check(op, (SW,), 1, "u", core.MODE_HIT), [(op, [2_500_000, 9_000_000])])
        full_d = core.decide("u", 1, (SW,), [now_us or 0, 0, 2_500_000, 9_000_000])
        assert _states(d) == _states(full_d) and d.now_us == (now_us or 0)
        assert not d.allowed and d.remaining == 0 and d.retry_after == 2.5 and d.reset_after == 9.0


def test_garbage_is_logged_once_until_replaced(caplog: pytest.LogCaptureFixture) -> None:
    keys = core.state_keys(Keyspace("t:"), "rl", "garbled", (SW,))
    peek = core.script_op(keys, (SW,), 1, core.MODE_PEEK)
    hit = core.script_op(keys, (SW,), 1)
    with caplog.at_level("WARNING", logger="redispatterns.ratelimit"):
        for _ in range(3):  # peeks leave it in place: one line
            replay(core.check(peek, (SW,), 1, "garbled", core.MODE_PEEK), [(peek, [1, 3, 0, 0, 1])])
        assert len(caplog.records) == 1 and "garbled" in caplog.text and "treated as absent" in caplog.text
        replay(core.check(hit, (SW,), 1, "garbled", core.MODE_HIT), [(hit, [1, 2, 0, 10, 1])])  # replaced
        assert len(caplog.records) == 1
        replay(core.check(hit, (SW,), 1, "garbled", core.MODE_HIT), [(hit, [1, 2, 0, 10, 1])])  # again later
        assert len(caplog.records) == 2 and "and replaced" in caplog.records[1].getMessage()


def test_denial_names_every_violated_policy_and_waits_for_the_slowest() -> None:
    d = replay(
        core.hit(KEYS, (SW, TB), 1),
        [(Script, reply_for((0, 0, 4_000_000, 9_000_000), (0, 0, 250_000, 2_000_000)))],
    )
    assert not d.allowed and d.violated == (SW.name, TB.name)
    assert d.retry_after_us == 4_000_000 and d.retry_after == 4.0
    h = d.headers()
    assert h["Retry-After"] == "4"
    assert h["RateLimit"] == '"3-per-10s";r=0;t=9, "bucket-4-2-per-1s";r=0;t=2'
    assert h["RateLimit-Policy"] == '"3-per-10s";q=3;w=10, "bucket-4-2-per-1s";q=4;w=2'


def test_never_admissible_cost() -> None:
    d = replay(core.hit(KEYS, (SW, TB), 9), [(Script, reply_for((0, 3, -1, 0), (0, 4, -1, 0)))])
    assert not d.allowed and d.retry_after is None and d.retry_after_us is None
    assert d.policies[0].retry_after is None and "Retry-After" not in d.headers()


def test_retry_after_header_rounds_up_and_is_at_least_one() -> None:
    d = replay(core.hit(KEYS[:1], (SW,), 1), [(Script, [1, 0, 1, 5])])
    assert d.headers()["Retry-After"] == "1"
    d = replay(core.hit(KEYS[:1], (SW,), 1), [(Script, [1, 0, 1_000_001, 5])])
    assert d.headers()["Retry-After"] == "2"
    legacy = d.headers(legacy=True)
    assert (legacy["X-RateLimit-Limit"], legacy["X-RateLimit-Remaining"], legacy["X-RateLimit-Reset"]) == (
        "3",
        "0",
        "1",
    )


def test_hook_is_called_through_compute() -> None:
    seen: list[Any] = []
    d = replay(
        core.hit(KEYS[:1], (SW,), 1, hook=seen.append),
        [(Script, [1, 2, 0, 10]), (lambda op: isinstance(op, Compute) and op.fn == seen.append, None)],
    )
    assert d.allowed


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_on_error_gives_a_degraded_decision(on_error: Any) -> None:
    boom = ConnectionError("down")
    d = replay(core.hit(KEYS, (SW, TB), 1, subject="s", on_error=on_error), [(Script, boom)])
    assert d.degraded and d.error is boom and d.allowed is (on_error == "open")
    assert d.limit == 3 and d.policies == () and d.headers() == ({} if d.allowed else {"Retry-After": "10"})


def test_on_error_raise_propagates() -> None:
    with pytest.raises(ConnectionError):
        replay(core.hit(KEYS, (SW, TB), 1), [(Script, ConnectionError("down"))])


def test_reset_is_one_del() -> None:
    assert replay(core.reset(KEYS), [(Command("DEL", *KEYS, keys=KEYS), 2)]) == 2


# --------------------------------------------------------------------------- wait


def test_wait_sleeps_retry_after_with_jitter_then_admits() -> None:
    flow = core.wait(KEYS[:1], (SW,), 1, timeout=None, jitter=0.5, rand=lambda: 0.5)
    d = replay(
        flow,
        [
            (Now(), 0.0),
            (Script, [1, 0, 2_000_000, 5]),
            (Now(), 0.0),
            (Sleep(2.5), 2.5),
            (Script, [1, 2, 0, 10]),
        ],
    )
    assert d.allowed


def test_wait_retries_soon_after_a_zero_retry_after() -> None:
    flow = core.wait(KEYS, (SW, TB), 1, timeout=1.0, now_us=lambda: 5)
    d = replay(
        flow,
        [
            (Now(), 0.0),
            (Script, reply_for((0, 0, 0, 5), (1, 2, 0, 5), now=5)),
            (Now(), 0.0),
            (Sleep(0.001), 0.0),
            (Script, reply_for((1, 1, 0, 5), (1, 1, 0, 5), now=5)),
        ],
    )
    assert d.allowed


def test_wait_gives_up_past_the_timeout_or_when_never() -> None:
    with pytest.raises(RateLimited) as info:
        replay(
            core.wait(KEYS[:1], (SW,), 1, timeout=1.0, subject="s"),
            [(Now(), 10.0), (Script, [1, 0, 2_000_000, 5]), (Now(), 10.0)],
        )
    assert info.value.retry_after == 2.0 and info.value.key == "s"
    with pytest.raises(RateLimited) as never:
        replay(core.wait(KEYS[:1], (SW,), 9, timeout=None), [(Now(), 0.0), (Script, [1, 3, -1, 0])])
    assert never.value.retry_after is None


def test_wait_caps_the_last_sleep_at_the_timeout() -> None:
    flow = core.wait(KEYS[:1], (SW,), 1, timeout=3.0, jitter=1.0, rand=lambda: 0.99)
    with pytest.raises(ReplayMismatch):  # the script ends after the capped sleep
        replay(flow, [(Now(), 0.0), (Script, [1, 0, 2_000_000, 5]), (Now(), 0.5), (Sleep(2.5), 3.0)])


def test_retry_delay() -> None:
    assert core.retry_delay(2.0, 0.1, 0.0) == 2.0
    assert math.isclose(core.retry_delay(2.0, 0.1, 0.999), 2.1998)


# --------------------------------------------------------------------------- oracles


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 6),
    window=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 4)), max_size=60),
)
def test_sliding_oracle_never_exceeds_and_never_rejects_falsely(
    limit: int, window: int, steps: list[tuple[int, int]]
) -> None:
    o = oracles.SlidingLogOracle(limit, window)
    now = 0
    admitted: list[int] = []
    for gap, cost in steps:
        now += gap
        live = [t for t in admitted if now < t + window]
        out = oracles.oracle_hit([o], now, cost)
        if out[1]:
            admitted += [now] * cost
        else:  # denied only when the window truly has no room
            assert cost > limit or len(live) + cost > limit
            if out[4] > 0:  # and retry_after is exact: one µs earlier still lacks room
                later = now + out[4]
                assert len([t for t in admitted if later < t + window]) + cost <= limit
                assert len([t for t in admitted if later - 1 < t + window]) + cost > limit
    for t in admitted:  # at most `limit` in any trailing window
        assert len([u for u in admitted if t <= u < t + window]) <= limit


def _gcra_reference(capacity: int, interval: int, steps: list[tuple[int, int]]) -> list[bool]:
    """GCRA as redis-cell writes it (integer TAT), an independent model of the token bucket."""
    tat: int | None = None
    now = 0
    out = []
    for gap, cost in steps:
        now += gap
        t = max(tat if tat is not None else now, now)
        new = t + cost * interval
        ok = cost <= capacity and now >= new - capacity * interval
        if ok and cost:
            tat = new
        out.append(ok)
    return out


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 8),
    interval=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 9)), max_size=60),
)
def test_token_bucket_oracle_equals_gcra(capacity: int, interval: int, steps: list[tuple[int, int]]) -> None:
    o = oracles.TokenBucketOracle(capacity, interval)
    now = 0
    got = []
    for gap, cost in steps:
        now += gap
        got.append(bool(oracles.oracle_hit([o], now, cost)[1]))
    assert got == _gcra_reference(capacity, interval, steps)


def test_fixed_oracle_counts_per_aligned_window() -> None:
    o = oracles.FixedWindowOracle(2, 100)
    assert [oracles.oracle_hit([o], t, 1)[1] for t in (0, 10, 99, 100, 150, 199)] == [1, 1, 0, 1, 1, 0]
    assert oracles.oracle_hit([o], 150, 5) == [150, 0, 0, 0, -1, 50]


def test_oracle_multi_policy_is_all_or_nothing_and_penalty_charges() -> None:
    a, b = oracles.SlidingLogOracle(1, 100), oracles.TokenBucketOracle(5, 10)
    assert oracles.oracle_hit([a, b], 0, 1)[1] == 1
    assert oracles.oracle_hit([a, b], 1, 1) == [1, 0, 0, 0, 99, 99, 1, 4, 0, 9]
    assert b.evaluate(1, 0)[1] == 4  # the denial left the bucket alone
    assert oracles.oracle_hit([a, b], 2, 1, core.MODE_PENALTY)[1] == 0
    assert a.log == [2] and b.evaluate(2, 0)[1] == 3  # penalty: both charged, the log capped
    assert oracles.oracle_hit([a, b], 3, 2, core.MODE_PEEK)[1] == 0
    assert oracles.oracle_for(SW).__class__ is oracles.SlidingLogOracle
    assert oracles.oracle_for(FW).__class__ is oracles.FixedWindowOracle


def test_token_bucket_penalty_empties_the_bucket() -> None:
    o = oracles.TokenBucketOracle(3, 10)
    oracles.oracle_hit([o], 0, 2)
    assert oracles.oracle_hit([o], 0, 2, core.MODE_PENALTY)[1] == 0
    assert o.evaluate(0, 0)[1] == 0 and o.evaluate(10, 0)[1] == 1


# --------------------------------------------------------------------------- client identity

NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", (), "203.0.113.9"),  # no trusted proxies: XFF ignored
        ("203.0.113.9", "1.2.3.4", NETS, "203.0.113.9"),  # peer not trusted: XFF ignored
        ("10.0.0.2", "1.2.3.4", NETS, "1.2.3.4"),
        ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7", NETS, "1.2.3.4"),  # right-most untrusted hop
        ("10.0.0.2", "10.0.0.5", NETS, "10.0.0.5"),  # all hops trusted: the left-most
        ("10.0.0.2", "not-an-ip", NETS, "10.0.0.2"),
        ("10.0.0.2", None, NETS, "10.0.0.2"),
        ("::1", "2001:db8::1", NETS, "2001:db8::1"),
        (None, None, (), "unknown"),
        ("garbage", "1.2.3.4", NETS, "garbage"),
    ],
)
def test_client_address(peer: str | None, xff: str | None, trusted: Any, expected: str) -> None:
    assert client_address(peer, xff, trusted) == expected


def test_shadow_reports_denials_as_allowed() -> None:
    d = replay(core.hit(KEYS[:1], (SW,), 1, shadow=True), [(Script, [1, 0, 5_000_000, 9])])
    assert d.allowed and d.shadowed and d.retry_after_us == 5_000_000 and d.violated == (SW.name,)
    ok = replay(core.hit(KEYS[:1], (SW,), 1, shadow=True), [(Script, [1, 2, 0, 9])])
    assert ok.allowed and not ok.shadowed


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 6),
    window=st.integers(2, 40),
    steps=st.lists(st.tuples(st.integers(0, 25), st.integers(0, 3)), max_size=60),
)
def test_sliding_counter_oracle_bounds(limit: int, window: int, steps: list[tuple[int, int]]) -> None:
    """The approximation never admits 2x the limit in a trailing window, and its retry is exact."""
    o = oracles.SlidingCounterOracle(limit, window)
    now = 0
    admitted: list[int] = []
    for gap, cost in steps:
        now += gap
        out = oracles.oracle_hit([o], now, cost)
        if out[1]:
            admitted += [now] * cost
        elif out[4] > 0:
            assert o._admits(now + out[4], cost) and not o._admits(now + out[4] - 1, cost)
    for t in admitted:
        assert len([u for u in admitted if t <= u < t + window]) < 2 * limit


def test_sliding_counter_policy() -> None:
    p = core.Policy.sliding_counter(100, 60)
    assert (p.kind, p.name, p.key_suffix) == (4, "100-per-60s-approx", "sx:100:60000000")
    # one packed integer up to about two million per window, the text state above: apart keys
    assert core.Policy.sliding_counter(2_095_106, 1).key_suffix.startswith("sx:")
    assert core.Policy.sliding_counter(2_095_107, 1).key_suffix == "sc:2095107:1000000"
    assert core.Policy.fixed(5, 60).key_suffix == "fx:5:60000000"
    assert oracles.oracle_for(p).__class__ is oracles.SlidingCounterOracle
    with pytest.raises(ValueError, match="token bucket"):
        core.Policy.sliding_counter(10**9, 86400 * 365)
    o = oracles.SlidingCounterOracle(2, 100)
    assert oracles.oracle_hit([o], 50, 2)[1] == 1
    assert oracles.oracle_hit([o], 150, 1) == [150, 1, 1, 0, 0, 150]  # prev weighs (100-50)/100*2 = 1
    assert oracles.oracle_hit([o], 150, 1) == [150, 0, 0, 0, 50, 150]  # full until the next window


# --------------------------------------------------------------------------- rate strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/minute", ((10, 60.0),)),
        ("100/second", ((100, 1.0),)),
        ("5/second;1000/hour", ((5, 1.0), (1000, 3600.0))),
        (" 5 / seconds ; 1000/hours ", ((5, 1.0), (1000, 3600.0))),
        ("10 per 2 minutes", ((10, 120.0),)),
        ("3/2 days", ((3, 172800.0),)),
        ("1 per day", ((1, 86400.0),)),
    ],
)
def test_rate_strings(text: str, expected: tuple[tuple[int, float], ...]) -> None:
    assert core.parse_rates(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "10", "10/min", "10/s", "ten/minute", "1.5/second", "-1/second", "0/second", "10/0 minutes",
     "10/minute;", "10/minute,5/second", "10/Minute", "10 minute", "10/minute;20/minute", "10/fortnight"],
)  # fmt: skip
def test_bad_rate_strings_name_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"second, minute, hour, day|same window|count must be"):
        core.parse_rates(text)


def test_rate_strings_build_policies() -> None:
    assert core.Policy.parse("5/second;1000/hour") == (
        core.Policy.sliding(5, 1),
        core.Policy.sliding(1000, 3600),
    )
    bucket = core.Policy.parse("100/minute", algorithm="token_bucket")[0]
    assert (bucket.limit, bucket.period_us) == (100, 600_000)
    assert core.Policy.parse("7/day", algorithm="fixed")[0] == core.Policy.fixed(7, 86400)
    with pytest.raises(ValueError, match="algorithm"):
        core.Policy.parse("7/day", algorithm="leaky")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        core.parse_rates(10)
    with pytest.raises(ValueError, match="MultiLimiter"):
        core.parse_rate("5/second;1000/hour", "SlidingWindowLimiter")


# --------------------------------------------------------------------------- the breaker's log


def test_breaker_logs_open_and_close_once_each(caplog: pytest.LogCaptureFixture) -> None:
    from redispatterns._core.breaker import CircuitBreaker

    b = CircuitBreaker(threshold=2, reset_after=1.0, name="limiter x")
    with caplog.at_level("INFO", logger="redispatterns.breaker"):
        b.failure(0.0, ConnectionError("down"))
        assert caplog.records == []
        assert b.failure(0.1, ConnectionError("down")) and b.state == "open"
        for t in (0.2, 0.3, 0.4):  # rejected calls: no line each
            assert not b.allow(t)
        assert b.allow(1.2) and b.state == "half-open"  # the probe fails: open again, no new line
        b.failure(1.2, TimeoutError("hung"))
        assert b.allow(2.3)
        b.success()
        b.success()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "circuit breaker of limiter x opened after 2" in lines[0][1]
    assert "ConnectionError('down')" in lines[0][1]
    assert lines[1] == ("INFO", "circuit breaker of limiter x closed: Redis answers again")


def test_breaker_logs_on_its_owners_logger(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from redispatterns._core.breaker import CircuitBreaker

    b = CircuitBreaker(threshold=1, log=logging.getLogger("redispatterns.ratelimit"))
    with caplog.at_level("INFO"):
        b.failure(0.0, OSError("refused"))
    assert [r.name for r in caplog.records] == ["redispatterns.ratelimit"]


def test_token_bucket_one_integer_reply() -> None:
    """tat - now after the call (admitted) or -(tat - now) - 1 (denied): the rest is derived."""
    op = core.script_op(KEYS[1:], (TB,), 1)  # capacity 4, one token per 500 ms: tau = 2 s
    d = replay(core.check(op, (TB,), 1, "u", core.MODE_HIT), [(op, 500_000)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us, d.now_us) == (True, 3, 0, 500_000, 0)
    d = replay(core.check(op, (TB,), 1, "u", core.MODE_HIT), [(op, -1_800_000 - 1)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us) == (False, 0, 300_000, 1_800_000)
    assert d.headers()["Retry-After"] == "1" and d.violated == (TB.name,)
    big = core.script_op(KEYS[1:], (TB,), 5, now_us=77)
    d = replay(core.check(big, (TB,), 5, "u", core.MODE_HIT), [(big, -1)])  # a full bucket, cost 5 > 4
    assert (d.allowed, d.remaining, d.retry_after, d.now_us) == (False, 4, None, 77)


def test_fixed_window_one_integer_reply() -> None:
    """count * window + reset - 1 (admitted: the count after the call), negated minus one when denied."""
    op = core.script_op(KEYS[:1], (FW,), 2)  # 5 per 60 s
    d = replay(core.check(op, (FW,), 2, "u", core.MODE_HIT), [(op, 3 * 60_000_000 + 9_999_999)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us) == (True, 2, 0, 10_000_000)
    d = replay(core.check(op, (FW,), 2, "u", core.MODE_HIT), [(op, -(4 * 60_000_000 + 4_999_999) - 1)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us) == (False, 1, 5_000_000, 5_000_000)
    never = core.script_op(KEYS[:1], (FW,), 6)
    d = replay(core.check(never, (FW,), 6, "u", core.MODE_HIT), [(never, -(0 * 60_000_000 + 59_999_999) - 1)])
    assert (d.allowed, d.remaining, d.retry_after) == (False, 5, None)


def test_sliding_log_admitted_reply_is_the_remaining_count() -> None:
    op = core.script_op(KEYS[:1], (SW,), 1)
    d = replay(core.check(op, (SW,), 1, "u", core.MODE_HIT), [(op, 2)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us) == (True, 2, 0, 10_000_000)
    assert d.limit == 3


def test_sliding_counter_admitted_reply_packs_remaining_and_reset() -> None:
    op = core.script_op(KEYS[:1], (SC,), 1)  # about 4 per 2 s
    d = replay(core.check(op, (SC,), 1, "u", core.MODE_HIT), [(op, 3 * 4_000_000 + 2_500_000 - 1)])
    assert (d.allowed, d.remaining, d.retry_after_us, d.reset_after_us) == (True, 3, 0, 2_500_000)
