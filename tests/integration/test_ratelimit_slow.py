"""Heavier rate-limit proofs on real servers: 4 processes at once, and Hypothesis-generated
arrival sequences through the real script checked against the oracles and the trailing-window
invariant."""

from __future__ import annotations

import multiprocessing
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redispatterns._core.ratelimit import MODE_HIT, MODE_PEEK, MODE_PENALTY, Policy
from redispatterns.client import _build
from redispatterns.ratelimit import MultiLimiter, SlidingWindowLimiter, TokenBucketLimiter
from redispatterns.testing.plugin import Backend
from tests.ratelimit_oracles import oracle_for, oracle_hit

pytestmark = pytest.mark.slow

T0 = 1_800_000_000_000_000


ROUNDS = 2


def _worker(url: str, attempts: int, start: Any, out: Any) -> None:
    client = _build(url, {}, asyncio_=False)
    limiters: dict[str, Any] = {
        "sliding": SlidingWindowLimiter(100, 3600, client=client),
        "token_bucket": TokenBucketLimiter(1, 100, per=3600, client=client),
    }
    for lim in limiters.values():
        lim.hit("warm-up")
    for round_ in range(ROUNDS):  # fresh keys each round, every process released together
        for name, lim in limiters.items():
            start.wait()
            out.put((name, round_, sum(bool(lim.hit(f"proc:{name}:{round_}")) for _ in range(attempts))))


def _first_kind(backend: Backend) -> None:
    """Processes need a real server; run on the first server kind only (standalone and cluster)."""
    if backend.is_fake:
        pytest.skip("processes cannot share a fakeredis server")
    assert backend.kind is not None
    from redispatterns.testing.servers import find_server_kinds

    if backend.kind.name != find_server_kinds()[0].name:
        pytest.skip("heavy test: first server kind only")


def test_four_processes_admit_exactly_the_limit(backend: Backend) -> None:
    """4 processes x 200 hits at limit 100, sliding log and token bucket, twice: exactly 100."""
    _first_kind(backend)
    assert backend.url is not None
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(backend.url, 200, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    totals: dict[tuple[str, int], int] = {}
    for _ in range(4 * ROUNDS * 2):
        name, round_, n = out.get(timeout=60)
        totals[name, round_] = totals.get((name, round_), 0) + n
    for p in procs:
        p.join(timeout=30)
    assert totals == {(a, r): 100 for a in ("sliding", "token_bucket") for r in range(ROUNDS)}


arrivals = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 1, 999, 50_000, 333_333, 999_999, 1_000_000, 2_500_000]),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=50,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 6), window_ms=st.sampled_from([1000, 1500, 3000]), steps=arrivals)
def test_sliding_log_property(
    standalone_url: str, limit: int, window_ms: int, steps: list[tuple[int, int]]
) -> None:
    """Never more than `limit` in any trailing window, no false rejection, oracle-exact replies."""
    client = _build(standalone_url, {}, asyncio_=False)
    clock = [T0]
    policy = Policy.sliding(limit, window_ms / 1000)
    lim = MultiLimiter([policy], client=client, _test_clock=lambda: clock[0])
    oracle = [oracle_for(policy)]
    window = window_ms * 1000
    key = f"prop:{id(steps)}:{limit}:{window_ms}"
    lim.reset(key)
    admitted: list[int] = []
    for gap, cost in steps:
        clock[0] += gap
        d = lim.hit(key, cost)
        want = oracle_hit(oracle, clock[0], cost)
        assert [d.now_us, int(d.allowed)] == want[:2]
        s = d.policies[0]
        assert [int(s.allowed), s.remaining, -1 if s.retry_after_us is None else s.retry_after_us] == want[
            2:5
        ]
        live = sum(1 for t in admitted if clock[0] < t + window)
        if d.allowed:
            admitted += [clock[0]] * cost
        else:
            assert cost > limit or live + cost > limit  # no false rejection
    for t in admitted:
        assert sum(1 for u in admitted if t <= u < t + window) <= limit
    client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.sampled_from([1.0, 3.0, 7 / 13, 1000.0]),
    capacity=st.integers(1, 8),
    steps=arrivals,
    multi=st.booleans(),
)
def test_token_bucket_and_multi_match_the_oracle(
    standalone_url: str, rate: float, capacity: int, steps: list[tuple[int, int]], multi: bool
) -> None:
    client = _build(standalone_url, {}, asyncio_=False)
    clock = [T0 + 123_457]
    pols = [Policy.token_bucket(rate, capacity)]
    if multi:
        pols += [Policy.sliding(5, 2), Policy.fixed(7, 3), Policy.sliding_counter(6, 2.5)]
    lim = MultiLimiter(pols, client=client, _test_clock=lambda: clock[0])
    oracles = [oracle_for(p) for p in pols]
    key = f"tb:{id(steps)}:{rate}:{capacity}:{multi}"
    lim.reset(key)
    for gap, cost in steps:
        clock[0] += gap
        d = lim.hit(key, cost)
        got = [d.now_us, int(d.allowed)]
        for s in d.policies:
            got += [int(s.allowed), s.remaining, -1 if s.retry_after_us is None else s.retry_after_us]
            got.append(s.reset_after_us)
        assert got == oracle_hit(oracles, clock[0], cost)
    stored = client.get(lim.keys(key)[0])
    assert stored is None or stored.isdigit()  # integers, never 1.7e+15
    client.close()


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed", "sliding_counter", "sliding", "multi"])
@pytest.mark.parametrize("limit", [1, 3, 10**9])
@pytest.mark.parametrize("penalty", [False, True])
def test_each_algorithms_own_script_matches_the_oracle(
    standalone_url: str, algorithm: str, limit: int, penalty: bool
) -> None:
    """One policy goes to its algorithm's own script (charge-first INCRBY paths undone on a
    denial, one-integer and table replies), a bucket with a fixed window to the multi script
    (its bucket charged first, undone when the window denies): 300 seeded hits, penalty hits
    and peeks at gaps from 0 to past the window agree with the oracle at every step."""
    client = _build(standalone_url, {}, asyncio_=False)
    clock = [T0 + 654_321]
    big = limit == 10**9  # replies too wide for one integer come as tables
    policies = []
    if algorithm in ("token_bucket", "multi"):
        policies.append(Policy.token_bucket(1000.0 if big else limit / 3, limit))
    if algorithm in ("fixed", "multi"):
        policies.append(Policy.fixed(max(1, limit - 1), 10.0 if big else 2.0))
    if algorithm in ("sliding_counter", "sliding"):
        window = (1.0 if algorithm == "sliding_counter" else 10.0) if big else 3.0
        policies.append(getattr(Policy, algorithm)(limit, window))
    lim = MultiLimiter(policies, client=client, penalty=penalty, _test_clock=lambda: clock[0])
    oracles = [oracle_for(p) for p in policies]
    key = f"own:{algorithm}:{limit}:{penalty}"
    lim.reset(key)
    rng = random.Random(f"{algorithm}{limit}{penalty}")
    gaps = [0, 0, 0, 1, 999, 50_000, 333_333, 999_999, 1_000_000, 2_500_000, 7_000_000]
    for step in range(300):
        gap, cost, peek = rng.choice(gaps), rng.choice([0, 1, 1, 1, 2, 4]), rng.random() < 0.2
        clock[0] += gap
        d = lim.peek(key, cost) if peek else lim.hit(key, cost)
        want = oracle_hit(
            oracles, clock[0], cost, MODE_PEEK if peek else (MODE_PENALTY if penalty else MODE_HIT)
        )
        got = [int(d.allowed)]
        for s in d.policies:
            got += [int(s.allowed), s.remaining, -1 if s.retry_after_us is None else s.retry_after_us]
        assert got == [want[1]] + [x for i in range(len(policies)) for x in want[2 + 4 * i : 5 + 4 * i]], (
            step,
            cost,
            peek,
        )
    client.close()
