"""Rate limiters on every backend and flavour: exact admission, retry_after exactness, atomic
multi-policy, cost edges, key hygiene, NOSCRIPT, error policy, mounts."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from redispatterns import Mount, RateLimited
from redispatterns._core.ratelimit import Policy
from redispatterns.ratelimit import (
    AsyncFixedWindowLimiter,
    AsyncMultiLimiter,
    AsyncSlidingCounterLimiter,
    AsyncSlidingWindowLimiter,
    AsyncTokenBucketLimiter,
    FixedWindowLimiter,
    MultiLimiter,
    SlidingCounterLimiter,
    SlidingWindowLimiter,
    TokenBucketLimiter,
    rate_limited,
)
from redispatterns.testing.plugin import Backend, Harness

T0 = 1_800_000_000_000_000  # a virtual "now" in µs (2027)
YEAR = 365 * 86400.0


class VClock:
    """A virtual server clock for the test-only ``_test_clock`` hook (integer µs)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def make(rp: Harness, algorithm: str, *args: Any, **kw: Any) -> Any:
    classes = {
        "sliding": (SlidingWindowLimiter, AsyncSlidingWindowLimiter),
        "token_bucket": (TokenBucketLimiter, AsyncTokenBucketLimiter),
        "fixed": (FixedWindowLimiter, AsyncFixedWindowLimiter),
        "multi": (MultiLimiter, AsyncMultiLimiter),
        "sliding_counter": (SlidingCounterLimiter, AsyncSlidingCounterLimiter),
    }
    kw.setdefault("client", rp.client)
    return rp.pick(*classes[algorithm])(*args, **kw)


def limiter_of(rp: Harness, algorithm: str, limit: int, **kw: Any) -> Any:
    """A limiter admitting exactly ``limit`` units for the duration of a test."""
    if algorithm == "sliding":
        return make(rp, "sliding", limit, 3600, **kw)
    if algorithm == "token_bucket":
        return make(rp, "token_bucket", 1, limit, per=3600, **kw)  # refills 1 token per hour
    if algorithm == "sliding_counter":
        return make(rp, "sliding_counter", limit, 10 * YEAR, **kw)
    return make(rp, "fixed", limit, 10 * YEAR, **kw)  # one clock-aligned window, years long


ALGORITHMS = ["sliding", "token_bucket", "fixed"]


def patient_client(rp: Harness, **opts: Any) -> Any:
    """A new client of the harness's flavour that waits 15 s to connect and for a reply (the
    pinned 2 s / 5 s suit production). An asyncio connect is timed on the event loop: a loaded
    CI machine stalling the process, or hundreds of tasks connecting at once, can run out its
    2 s though the kernel connected at once ("Timeout connecting to server"). The exact counts
    checked through these clients do not depend on how long a connect may take."""
    opts = {"socket_connect_timeout": 15.0, "socket_timeout": 15.0, **opts}
    if rp.is_async:
        return rp.call_in_loop(lambda: rp.backend.async_client(**opts))
    return rp.backend.sync_client(**opts)


# --------------------------------------------------------------------------- exact admission


def admitted_by_threads(lim: Any, key: str, threads: int, each: int) -> int:
    """Units admitted when ``threads`` threads, released together, each hit ``each`` times."""
    barrier = threading.Barrier(threads)
    counts = [0] * threads

    def worker(i: int) -> None:
        barrier.wait()
        counts[i] = sum(bool(lim.hit(key)) for _ in range(each))

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts)


async def admitted_by_tasks(lim: Any, key: str, tasks: int, each: int) -> int:
    """Units admitted when ``tasks`` asyncio tasks each hit ``each`` times."""

    async def one() -> int:
        return sum([bool(await lim.hit(key)) for _ in range(each)])

    return sum(await asyncio.gather(*(one() for _ in range(tasks))))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_exact_admission_under_concurrency(rp: Harness, algorithm: str) -> None:
    """8 threads x 200 (sync) or 200 tasks x 8 (async) at limit 100: exactly 100, twice."""
    client = patient_client(rp, max_connections=256) if rp.is_async else patient_client(rp)
    rp.call(client.ping())  # redis-py's asyncio RedisCluster fails when its first commands race
    for round_ in range(2):  # fresh keys each round
        lim = limiter_of(rp, algorithm, 100, client=client)
        key = f"user:{algorithm}:{round_}"
        if rp.is_async:
            admitted = rp.call(admitted_by_tasks(lim, key, 200, 8))
        else:
            admitted = admitted_by_threads(lim, key, 8, 200)
        assert admitted == 100
        if algorithm == "sliding":
            assert rp.sync_client.zcard(lim.keys(key)[0]) == 100


def test_identical_timestamps_still_exact(rp: Harness) -> None:
    """Every caller at the same microsecond (virtual clock): unique members keep the log exact."""
    lim = make(rp, "sliding", 50, 1, _test_clock=VClock(), client=patient_client(rp))
    admitted = [bool(rp.call(lim.hit("same-tick"))) for _ in range(120)]
    assert sum(admitted) == 50 and all(admitted[:50])
    assert rp.sync_client.zcard(lim.keys("same-tick")[0]) == 50


# --------------------------------------------------------------------------- retry_after exactness


@pytest.mark.parametrize(
    ("algorithm", "args"),
    [
        ("sliding", (3, 10)),
        ("token_bucket", (7, 3)),
        ("token_bucket", (3, 1, 13.0)),
        ("fixed", (3, 10)),
        ("sliding_counter", (3, 2.5)),
    ],
)
def test_retry_after_is_exact(rp: Harness, algorithm: str, args: tuple[Any, ...]) -> None:
    clock = VClock()
    if algorithm == "token_bucket" and len(args) == 3:
        lim = make(rp, algorithm, args[0], args[1], per=args[2], _test_clock=clock)
    else:
        lim = make(rp, algorithm, *args, _test_clock=clock)
    rng = random.Random(7)
    for _ in range(40):
        d = rp.call(lim.hit("k"))
        if d.allowed:
            clock.now += rng.choice([0, 1, 1000, 250_000])
            continue
        assert d.retry_after_us and d.retry_after_us > 0
        start = clock.now
        clock.now = start + d.retry_after_us - 1
        early = rp.call(lim.peek("k"))
        assert not early.allowed and early.retry_after_us == 1
        clock.now = start + d.retry_after_us
        assert rp.call(lim.hit("k")).allowed


def test_cost_edges(rp: Harness) -> None:
    clock = VClock()
    for algorithm in ALGORITHMS:
        lim = limiter_of(rp, algorithm, 5, _test_clock=clock)
        key = f"edge:{algorithm}"
        assert rp.call(lim.hit(key, 2)).remaining == 3
        state = rp.sync_client.dump(lim.keys(key)[0])
        zero = rp.call(lim.hit(key, 0))  # cost 0 = peek
        assert zero.allowed and zero.remaining == 3
        never = rp.call(lim.hit(key, 6))  # above capacity: never
        assert not never.allowed and never.retry_after is None
        assert "Retry-After" not in never.headers()
        peeked = rp.call(lim.peek(key, 4))
        assert not peeked.allowed and peeked.remaining == 3
        assert rp.sync_client.dump(lim.keys(key)[0]) == state  # nothing changed
        assert rp.call(lim.hit(f"fresh:{algorithm}", 5)).allowed  # cost == capacity on a fresh key
        assert rp.call(lim.hit(key, 3)).remaining == 0
        assert not rp.call(lim.hit(key)).allowed


def test_remaining_and_reset_counting_down(rp: Harness) -> None:
    clock = VClock(T0 - T0 % 60_000_000)  # the start of a minute, for the fixed window
    lim = make(rp, "sliding", 3, 60, _test_clock=clock)
    fixed = make(rp, "fixed", 3, 60, _test_clock=clock)
    for expect in (2, 1, 0):
        d = rp.call(lim.hit("u"))
        f = rp.call(fixed.hit("u"))
        assert (d.remaining, d.reset_after, d.limit) == (expect, 60.0, 3)
        assert f.remaining == expect and f.reset_after_us == 60_000_000 - (clock.now - (T0 - T0 % 60_000_000))
        clock.now += 1_000_000
    d = rp.call(lim.hit("u"))
    assert (d.allowed, d.retry_after, d.reset_after) == (False, 57.0, 59.0)
    h = d.headers()
    assert h["Retry-After"] == "57"
    assert h["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
    assert h["RateLimit"] == '"3-per-60s";r=0;t=59'


def test_boundary_burst(rp: Harness) -> None:
    """L at W-1 ms then L at W+1 ms: the fixed window admits 2L, the log L, the bucket L + refill."""
    window = 10_000_000
    start = T0 - T0 % window  # a fixed-window boundary
    clock = VClock(start + window - 1000)
    fixed = make(rp, "fixed", 10, 10, _test_clock=clock)
    log = make(rp, "sliding", 10, 10, _test_clock=clock)
    bucket = make(rp, "token_bucket", 1, 10, _test_clock=clock)  # 1/s, capacity 10
    admitted = {"fixed": 0, "sliding": 0, "bucket": 0}
    for at in (start + window - 1000, start + window + 1000):
        clock.now = at
        for _ in range(10):
            for name, lim in (("fixed", fixed), ("sliding", log), ("bucket", bucket)):
                admitted[name] += bool(rp.call(lim.hit("edge")))
    assert admitted == {"fixed": 20, "sliding": 10, "bucket": 10}  # 2 ms later: no token refilled yet
    clock.now = start + window + 1_000_000 - 1000  # one second after the first burst
    assert rp.call(bucket.hit("edge")).allowed and not rp.call(bucket.hit("edge")).allowed
    assert not rp.call(log.hit("edge")).allowed


# --------------------------------------------------------------------------- oracle (every backend)


def test_matches_the_oracle_on_a_virtual_clock(rp: Harness) -> None:
    """Random arrivals through the real script equal the pure-Python oracle, reply for reply."""
    from tests.ratelimit_oracles import oracle_for, oracle_hit

    rng = random.Random(11)
    policies = (
        Policy.sliding(5, 2),
        Policy.token_bucket(3, 4, per=1.5),
        Policy.fixed(6, 3),
        Policy.sliding_counter(4, 2),
    )
    for trial in range(6):
        pols = tuple(p for p in policies if rng.random() < 0.7) or policies[:1]
        clock = VClock(T0 + rng.randrange(10**9))
        lim = make(rp, "multi", pols, _test_clock=clock, penalty=trial % 3 == 2)
        oracles = [oracle_for(p) for p in pols]
        for _ in range(40):
            clock.now += rng.choice([0, 1, 999, 100_000, 700_000, 2_000_000])
            cost = rng.choice([0, 1, 1, 2, 3, 7])
            d = rp.call(lim.hit(f"o{trial}", cost))
            want = oracle_hit(oracles, clock.now, cost, 2 if trial % 3 == 2 else 1)
            got = [d.now_us, int(d.allowed)]
            for s in d.policies:
                got += [int(s.allowed), s.remaining, -1 if s.retry_after_us is None else s.retry_after_us]
                got.append(s.reset_after_us)
            assert got == want


# --------------------------------------------------------------------------- multi-policy


def test_multi_limit_is_all_or_nothing(rp: Harness) -> None:
    clock = VClock()
    per_second = Policy.sliding(3, 1, name="burst")
    hourly = Policy.token_bucket(10, 10, per=3600, name="hourly")
    lim = make(rp, "multi", [per_second, hourly], _test_clock=clock)
    for _ in range(3):
        assert rp.call(lim.hit("tenant:42")).allowed
    before = rp.sync_client.get(lim.keys("tenant:42")[1])
    for _ in range(20):  # saturated per second: every denial leaves the hourly budget alone
        d = rp.call(lim.hit("tenant:42"))
        assert not d.allowed and d.violated == ("burst",)
    assert rp.sync_client.get(lim.keys("tenant:42")[1]) == before
    assert rp.call(lim.peek("tenant:42")).policies[1].remaining == 7
    clock.now += 1_000_000
    for _ in range(7):
        assert rp.call(lim.hit("tenant:42", 1)).allowed
        clock.now += 400_000
    d = rp.call(lim.hit("tenant:42"))
    assert not d.allowed and d.violated == ("hourly",)
    clock.now += 10_000_000
    d = rp.call(lim.hit("tenant:42", 4))  # both denied together
    assert set(d.violated) == {"burst", "hourly"} or d.violated == ("hourly",)
    assert d.headers()["RateLimit-Policy"] == '"burst";q=3;w=1, "hourly";q=10;w=3600'


def test_multi_limit_atomic_under_eight_workers(rp: Harness) -> None:
    pols = [Policy.sliding(40, 3600, name="a"), Policy.token_bucket(1, 25, per=3600, name="b")]
    lim = make(rp, "multi", pols)
    key = "org:7"
    rp.call(rp.client.ping())  # see test_exact_admission_under_concurrency
    if rp.is_async:
        admitted = rp.call(admitted_by_tasks(lim, key, 8, 20))
    else:
        admitted = admitted_by_threads(lim, key, 8, 20)
    assert admitted == 25
    assert rp.sync_client.zcard(lim.keys(key)[0]) == 25  # the sliding log charged only admitted hits


def test_penalty_mode_charges_denials(rp: Harness) -> None:
    clock = VClock()
    lim = make(rp, "sliding", 2, 10, penalty=True, _test_clock=clock)
    plain = make(rp, "sliding", 2, 10, name="plain", _test_clock=clock)
    for limiter in (lim, plain):
        assert rp.call(limiter.hit("abuser")).allowed
        assert rp.call(limiter.hit("abuser")).allowed
    for at in (9_000_000, 9_500_000):  # two denied attempts late in the window
        clock.now = T0 + at
        assert not rp.call(lim.hit("abuser")).allowed
        assert not rp.call(plain.hit("abuser")).allowed
    clock.now = T0 + 10_000_000  # the admitted pair has left the window
    assert rp.call(plain.hit("abuser")).allowed
    d = rp.call(lim.hit("abuser"))  # but the charged attempts have not
    assert not d.allowed and d.retry_after_us == 9_000_000
    assert rp.sync_client.zcard(lim.keys("abuser")[0]) == 2  # the log never outgrows the limit


def test_shadow_mode_never_denies_but_says_so(rp: Harness) -> None:
    seen: list[Any] = []
    lim = make(rp, "sliding", 2, 60, shadow=True, on_decision=seen.append)
    results = [rp.call(lim.hit("dark")) for _ in range(4)]
    assert all(d.allowed for d in results)
    assert [d.shadowed for d in results] == [False, False, True, True] == [d.shadowed for d in seen]
    assert results[-1].retry_after_us and "Retry-After" not in results[-1].headers()
    assert rp.sync_client.zcard(lim.keys("dark")[0]) == 2  # shadowed requests are not recorded
    assert not rp.call(lim.peek("dark")).allowed  # peek tells the truth
    assert rp.call(lim.wait("dark", timeout=0)).shadowed
    assert rp.call(lim.enforce("dark")).shadowed
    with pytest.raises(ValueError, match="pick one"):
        make(rp, "sliding", 2, 60, shadow=True, penalty=True)


# --------------------------------------------------------------------------- keys, scripts, errors


def test_every_key_has_a_ttl_and_memory_is_small(rp: Harness, backend: Backend) -> None:
    lims = [
        make(rp, "sliding", 100, 60),
        make(rp, "token_bucket", 100, 100, per=60),
        make(rp, "fixed", 100, 60),
        make(rp, "multi", [Policy.sliding(10, 1), Policy.token_bucket(1000, per=3600)]),
        make(rp, "sliding_counter", 100, 60),
    ]
    for lim in lims:
        for i in range(3):
            rp.call(lim.hit(f"user:{i}", 2))
    c = rp.sync_client
    now_us = int(c.time()[0]) * 1_000_000 + int(c.time()[1])
    for lim in lims:
        for i in range(3):
            for policy, k in zip(lim.policies, lim.keys(f"user:{i}"), strict=True):
                ttl = c.pttl(k)
                assert 0 < ttl <= 2 * policy.window * 1000 + 1000, (k, ttl)  # tied to the window
                if policy.algorithm == "token_bucket":  # outlives its state: the bucket refilled
                    assert int(c.get(k)) - now_us <= ttl * 1000 + 1000, k
    assert c.pttl(lims[0].keys("user:0")[0]) > 59_000  # the sliding log lives a window
    if not backend.is_fake:
        bucket = c.memory_usage(lims[1].keys("user:0")[0], samples=0)
        log = c.memory_usage(lims[0].keys("user:0")[0], samples=0)
        assert bucket <= 100, bucket
        assert log < 400, log
        assert c.memory_usage(lims[4].keys("user:0")[0], samples=0) <= 128  # one short string


def test_keys_follow_the_mount_and_share_a_hash_tag(rp: Harness) -> None:
    mount = Mount(prefix="app:")
    lim = make(rp, "multi", [Policy.sliding(5, 1), Policy.fixed(100, 3600)], mount=mount, name="api")
    keys = lim.keys("user:42")
    assert all(k.startswith("app:rl:api:{user:42}:") for k in keys)
    rp.call(lim.hit("user:42"))
    assert all(rp.sync_client.exists(k) for k in keys)
    assert rp.call(lim.reset("user:42")) is True
    assert not any(rp.sync_client.exists(k) for k in keys)
    assert rp.call(lim.reset("user:42")) is False
    ro = Mount(prefix="app:", mode="read")
    reader = make(rp, "sliding", 5, 1, mount=ro)
    with pytest.raises(PermissionError):
        rp.call(reader.hit("user:42"))
    assert rp.call(reader.peek("user:42")).allowed


def test_subjects_spread_over_every_cluster_master(rp: Harness, backend: Backend) -> None:
    """Keys are tagged per subject (never one global tag): 300 subjects land on every master."""
    if not backend.is_cluster:
        pytest.skip("cluster only")
    lim = make(rp, "multi", [Policy.sliding(5, 60), Policy.token_bucket(1, 5, per=60)])
    c = rp.sync_client
    nodes = set()
    for i in range(300):
        keys = lim.keys(f"user:{i}")
        nodes.add(c.get_node_from_key(keys[0]).name)
    assert len(nodes) == len(c.get_primaries()) >= 3
    for i in range(0, 300, 30):
        assert rp.call(lim.hit(f"user:{i}")).allowed


def test_script_flush_between_calls(rp: Harness, backend: Backend) -> None:
    lim = make(rp, "sliding", 3, 60)
    flusher = backend.sync_client()
    for _ in range(3):
        assert rp.call(lim.hit("flushy")).allowed
        flusher.script_flush()
    assert not rp.call(lim.hit("flushy")).allowed


def test_clients_with_skewed_clocks_decide_identically(
    rp: Harness, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server time decides: shifting the clients' wall clocks by ±5 s changes nothing."""
    lim = make(rp, "sliding", 5, 3600)
    other = make(rp, "sliding", 5, 3600, client=rp.pick(backend.sync_client, rp_async_client(rp))())
    baseline = [(d.allowed, d.remaining) for d in (rp.call(lim.hit("plain")) for _ in range(7))]
    real = time.time
    seen = []
    for i in range(7):
        monkeypatch.setattr(time, "time", (lambda: real() + 5) if i % 2 else (lambda: real() - 5))
        d = rp.call((lim if i % 2 else other).hit("skewed"))
        seen.append((d.allowed, d.remaining))
    assert seen == baseline == [(True, 4), (True, 3), (True, 2), (True, 1), (True, 0), (False, 0), (False, 0)]


def rp_async_client(rp: Harness) -> Callable[[], Any]:
    return lambda: rp.call_in_loop(rp.backend.async_client)


@pytest.mark.parametrize("on_error", ["open", "closed", "raise"])
def test_on_error_policy(rp: Harness, on_error: str) -> None:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from redispatterns.testing.servers import free_port

    port = free_port()
    retry = AsyncRetry(NoBackoff(), 0) if rp.is_async else Retry(NoBackoff(), 0)
    opts: dict[str, Any] = {"port": port, "socket_connect_timeout": 0.2, "retry": retry}
    dead: Any = rp.call_in_loop(lambda: redis.asyncio.Redis(**opts)) if rp.is_async else redis.Redis(**opts)
    seen: list[Any] = []
    lim = make(rp, "sliding", 5, 60, client=dead, on_error=on_error, on_decision=seen.append)
    if on_error == "raise":
        with pytest.raises(redis.ConnectionError):
            rp.call(lim.hit("x"))
        assert seen == []
    else:
        d = rp.call(lim.hit("x"))
        assert d.degraded and d.allowed is (on_error == "open") and d.error is not None
        assert seen == [d]
    if rp.is_async:
        rp.call(dead.aclose())
    else:
        dead.close()


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_failing_open_or_closed_stops_asking_a_dead_server(rp: Harness, on_error: str) -> None:
    """After a few outages the breaker opens: calls get the degraded decision without touching
    Redis (a hung server would otherwise cost a socket timeout on every call)."""
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    import redispatterns as rpm
    from loadtests.harness import count_round_trips
    from redispatterns.testing.servers import free_port

    retry = AsyncRetry(NoBackoff(), 0) if rp.is_async else Retry(NoBackoff(), 0)
    opts: dict[str, Any] = {"port": free_port(), "socket_connect_timeout": 0.2, "retry": retry}
    dead: Any = rp.call_in_loop(lambda: redis.asyncio.Redis(**opts)) if rp.is_async else redis.Redis(**opts)
    lim = make(rp, "sliding", 5, 60, client=dead, on_error=on_error)
    first = [rp.call(lim.hit("x")) for _ in range(5)]
    assert all(d.degraded and not isinstance(d.error, rpm.ServerUnavailable) for d in first)
    assert lim.breaker is not None and lim.breaker.state == "open"
    with count_round_trips() as sent:
        later = [rp.call(lim.hit("x")) for _ in range(20)]
    assert sent.n == 0  # Redis skipped while the breaker is open
    assert all(d.degraded and d.allowed is (on_error == "open") for d in later)
    assert all(isinstance(d.error, rpm.ServerUnavailable) for d in later)
    if rp.is_async:
        rp.call(dead.aclose())
    else:
        dead.close()


@pytest.mark.usefixtures("no_gc_pauses")
@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_a_hung_server_costs_one_timeout_per_call_then_microseconds(
    rp: Harness, backend: Backend, on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that accepts and never answers (SIGSTOP, a stalled VM): each of the first checks
    costs one socket timeout (counted at once, never retried), then the breaker opens, says so
    once, and every check costs microseconds."""
    if backend.is_fake or backend.is_cluster:
        pytest.skip("the hung server is this test's own socket: once per flavour is enough")
    import socket

    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from loadtests.harness import count_round_trips

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and hold every connection, never reply
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = listener.getsockname()[1]
    retry = AsyncRetry(NoBackoff(), 0) if rp.is_async else Retry(NoBackoff(), 0)
    opts: dict[str, Any] = {
        "port": port,
        "socket_timeout": 0.2,
        "socket_connect_timeout": 0.2,
        "retry": retry,
    }
    hung: Any = rp.call_in_loop(lambda: redis.asyncio.Redis(**opts)) if rp.is_async else redis.Redis(**opts)
    lim = make(rp, "token_bucket", 5, client=hung, on_error=on_error, name="hung")
    try:
        with caplog.at_level("INFO", logger="redispatterns.ratelimit"):
            started = time.monotonic()
            first = [rp.call(lim.hit("x")) for _ in range(5)]
            slow = time.monotonic() - started
            with count_round_trips() as sent:
                later = [rp.call(lim.hit("x")) for _ in range(50)]
        assert 5 * 0.2 * 0.9 <= slow < 5 * 0.2 * 3  # one timeout each, no retry
        assert sent.n == 0  # then the open breaker skips Redis: no timeout to wait for
        assert all(d.degraded and d.allowed is (on_error == "open") for d in first + later)
        assert lim.breaker is not None and lim.breaker.state == "open" and lim.breaker.trips == 1
        opened = [r for r in caplog.records if "opened after 5" in r.getMessage()]
        assert len(opened) == 1 and opened[0].levelname == "WARNING" and "hung" in opened[0].getMessage()
    finally:
        stop.set()
        acceptor.join()
        for conn in held:
            conn.close()
        listener.close()
        if rp.is_async:
            rp.call(hung.aclose())
        else:
            hung.close()


@pytest.mark.parametrize("algorithm", ["sliding", "token_bucket", "fixed", "sliding_counter"])
@pytest.mark.parametrize("planted", ["list", "garbage"])
def test_corrupted_state_counts_as_absent_and_is_replaced(
    rp: Harness, algorithm: str, planted: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage under a subject's key (another type, or an unreadable string) must not deny that
    subject forever: it is treated as no state, the first charged hit replaces it, and one log
    line says so (D13)."""
    lim = limiter_of(rp, algorithm, 5, name=f"d13-{planted}")
    (key,) = lim.keys("victim")
    raw = rp.backend.sync_client()
    raw.delete(key)
    if planted == "list":
        raw.rpush(key, "junk")
    else:
        raw.set(key, "not-a-limiter-state")
    with caplog.at_level("WARNING", logger="redispatterns.ratelimit"):
        peek = rp.call(lim.peek("victim"))
        assert peek.allowed and peek.remaining == 5  # read-only: treated as empty, left as it was
        assert rp.call(lim.peek("victim")).remaining == 5
        first = rp.call(lim.hit("victim"))
        second = rp.call(lim.hit("victim"))
    logged = [r.getMessage() for r in caplog.records if r.name == "redispatterns.ratelimit"]
    assert len(logged) == 1 and "'victim'" in logged[0] and key in logged[0], logged
    assert (first.allowed, first.remaining) == (True, 4)
    assert (second.allowed, second.remaining) == (True, 3)  # the state now counts
    kind = raw.type(key)
    assert kind == (b"zset" if algorithm == "sliding" else b"string")
    assert kind == b"zset" or raw.get(key) != b"not-a-limiter-state"


def test_hook_sees_every_decision(rp: Harness) -> None:
    seen: list[Any] = []
    if rp.is_async:

        async def hook(d: Any) -> None:
            seen.append(d)

        lim = make(rp, "sliding", 1, 60, on_decision=hook)
    else:
        lim = make(rp, "sliding", 1, 60, on_decision=seen.append)
    a = rp.call(lim.hit("h"))
    b = rp.call(lim.hit("h"))
    assert [d.allowed for d in seen] == [True, False] and seen == [a, b]


def test_wait_sleeps_until_admitted_or_times_out(rp: Harness) -> None:
    lim = make(rp, "sliding", 1, 0.3)
    assert rp.call(lim.hit("w")).allowed
    assert not rp.call(lim.hit("w")).allowed
    d = rp.call(lim.wait("w", timeout=5))  # sleeps about 0.3 s
    assert d.allowed
    with pytest.raises(RateLimited) as info:
        rp.call(lim.wait("w", timeout=0.01))
    assert info.value.retry_after is not None and info.value.retry_after > 0.01
    with pytest.raises(RateLimited) as never:
        rp.call(lim.wait("w", cost=2))
    assert never.value.retry_after is None


def test_enforce_raises_rate_limited(rp: Harness) -> None:
    lim = make(rp, "token_bucket", 1, 1, per=60)
    assert rp.call(lim.enforce("e")).allowed
    with pytest.raises(RateLimited) as info:
        rp.call(lim.enforce("e"))
    assert info.value.key == "e" and info.value.decision is not None
    assert 59 < (info.value.retry_after or 0) <= 60


def test_bad_arguments(rp: Harness) -> None:
    lim = make(rp, "sliding", 5, 1)
    with pytest.raises(TypeError):
        rp.call(lim.hit(42))
    with pytest.raises(ValueError):
        rp.call(lim.hit(""))
    with pytest.raises(ValueError):
        rp.call(lim.hit("k", -1))
    with pytest.raises(TypeError):
        rp.call(lim.hit("k", 1.5))
    with pytest.raises(ValueError):
        make(rp, "sliding", 0, 1)
    with pytest.raises(ValueError):
        make(rp, "sliding", 5, -1)
    with pytest.raises(ValueError):
        make(rp, "token_bucket", 10**7, 5)  # faster than one token per µs
    with pytest.raises(ValueError):
        make(rp, "multi", [])
    with pytest.raises(ValueError):
        make(rp, "multi", [Policy.sliding(5, 1), Policy.sliding(5, 1, name="other")])
    with pytest.raises(ValueError):
        make(rp, "sliding", 5, 1, on_error="ignore")
    with pytest.raises(TypeError):
        make(rp, "multi", ["10/s"])
    with pytest.raises(ValueError, match="names"):
        make(rp, "multi", [Policy.sliding(5, 1, name="x"), Policy.fixed(5, 1, name="x")])
    with pytest.raises(TypeError):
        make(rp, "sliding", 5, 1, on_decision="log")
    with pytest.raises(ValueError):
        make(rp, "sliding", 5, 1, name="{x}")
    with pytest.raises(ValueError):
        rp.call(lim.wait("k", timeout=-1))
    with pytest.raises(ValueError):
        rp.call(lim.wait("k", jitter=2))
    multi = make(rp, "multi", [Policy.sliding(5, 1), Policy.token_bucket(2, 3)])
    assert multi.limit == 3 and "5-per-1s, bucket-3-2-per-1s" in repr(multi)
    d = rp.call(multi.hit("k"))
    assert d.reset_after == d.reset_after_us / 1e6 and d.policies[1].reset_after > 0


# --------------------------------------------------------------------------- rate strings


def test_rate_strings_build_the_same_limiters(rp: Harness) -> None:
    same = [
        (make(rp, "sliding", "10/minute"), make(rp, "sliding", 10, 60)),
        (make(rp, "token_bucket", "100/second"), make(rp, "token_bucket", 100)),
        (make(rp, "token_bucket", "6/minute", 2), make(rp, "token_bucket", 6, 2, per=60)),
        (make(rp, "fixed", "1000/day"), make(rp, "fixed", 1000, 86400)),
        (make(rp, "sliding_counter", "100 per 2 minutes"), make(rp, "sliding_counter", 100, 120)),
        (make(rp, "multi", "5/second;1000/hour"),
         make(rp, "multi", [Policy.sliding(5, 1), Policy.sliding(1000, 3600)])),
    ]  # fmt: skip
    for by_text, by_number in same:
        assert by_text.policies == by_number.policies and by_text.keys("u") == by_number.keys("u")
    # minutes, not seconds: three quick hits rarely straddle an epoch-aligned window
    lim: Any = rp.pick(MultiLimiter, AsyncMultiLimiter)(
        "2/minute;3/hour", algorithm="fixed", client=rp.client
    )
    assert [p.algorithm for p in lim.policies] == ["fixed", "fixed"]
    assert [bool(rp.call(lim.hit("t"))) for _ in range(3)] == [True, True, False]
    with pytest.raises(TypeError, match="not both"):
        make(rp, "sliding", "10/minute", 60)
    with pytest.raises(TypeError, match="window"):
        make(rp, "fixed", 10)
    with pytest.raises(ValueError, match="MultiLimiter"):
        make(rp, "sliding", "5/second;1000/hour")
    with pytest.raises(ValueError, match="second, minute, hour, day"):
        make(rp, "token_bucket", "100/sec")
    with pytest.raises(TypeError, match="not both"):
        make(rp, "token_bucket", "100/second", per=2.0)
    with pytest.raises(ValueError, match="algorithm"):
        rp.pick(MultiLimiter, AsyncMultiLimiter)([Policy.sliding(1, 1)], algorithm="fixed", client=rp.client)


def test_rate_limited_takes_a_rate_string(rp: Harness, backend: Backend) -> None:
    import redispatterns as rpm

    if rp.is_async:
        rpm.configure(async_client=rp.client)
    else:
        rpm.configure(client=backend.sync_client())
    try:
        if rp.is_async:

            @rate_limited("2/minute;100/day", key=lambda n: f"n:{n}")
            async def work(n: int) -> int:
                return n * 2

        else:

            @rate_limited("2/minute;100/day", key=lambda n: f"n:{n}")
            def work(n: int) -> int:
                return n * 2

        limiter = work.limiter
        assert isinstance(limiter, rp.pick(MultiLimiter, AsyncMultiLimiter))
        assert [p.name for p in limiter.policies] == ["2-per-60s", "100-per-86400s"]
        rp.call(limiter.reset("n:1"))
        assert [rp.call(work(1)), rp.call(work(1))] == [2, 2]
        with pytest.raises(RateLimited) as info:
            rp.call(work(1))
        decision: Any = info.value.decision
        assert decision is not None and decision.violated == ("2-per-60s",)
        assert rp.call(work(2)) == 4  # another subject
        assert work.__name__ == "work"
    finally:
        rpm.configure()


def test_a_multi_check_denied_elsewhere_leaves_the_bucket_as_it_was(rp: Harness) -> None:
    """The multi script charges a token bucket first (INCRBY) and undoes it when another policy
    denies: a bucket that had no key has none after, one that had state keeps it and its TTL."""
    window, bucket = Policy.fixed(1, 3600), Policy.token_bucket(1, 5, per=3600)
    lim = make(rp, "multi", [window, bucket], name="undo")
    raw = rp.backend.sync_client()
    key = lim.keys("u")[1]
    assert rp.call(lim.hit("u")).allowed
    state, ttl = raw.get(key), raw.pttl(key)
    assert state is not None and ttl > 0
    d = rp.call(lim.hit("u"))
    assert not d.allowed and d.violated == (window.name,) and d.policies[1].allowed
    assert raw.get(key) == state and 0 < raw.pttl(key) <= ttl
    raw.delete(key)
    d = rp.call(lim.hit("u"))
    assert not d.allowed and d.policies[1].remaining == 5
    assert raw.exists(key) == 0


def test_a_multi_hit_denied_by_its_last_policy_undoes_every_charge_before(rp: Harness) -> None:
    """A hit of cost 1 charges the bucket, fixed window and counter in place (INCRBY) as it
    goes; the sliding log last in line denies, so each charge is undone: a state and its TTL
    stay as they were, and a key the charge created is gone (no TTL-less leftover)."""
    pols = [
        Policy.token_bucket(1, 5, per=3600),
        Policy.fixed(3, 10 * YEAR),
        Policy.sliding_counter(3, 10 * YEAR),
        Policy.sliding(1, 3600, name="log"),
    ]
    lim = make(rp, "multi", pols, name="undo-all")
    raw = rp.backend.sync_client()
    keys = lim.keys("u")
    first = rp.call(lim.hit("u"))
    assert first.allowed and [s.remaining for s in first.policies] == [4, 2, 2, 0]
    before = [(raw.get(k), raw.pttl(k)) for k in keys[:3]]
    assert all(v is not None and ttl > 0 for v, ttl in before)
    for _ in range(3):
        d = rp.call(lim.hit("u"))
        assert not d.allowed and d.violated == ("log",)
        assert [s.remaining for s in d.policies[:3]] == [4, 2, 2]  # as of now: nothing charged
    for k, (v, ttl) in zip(keys[:3], before, strict=True):
        assert raw.get(k) == v and 0 < raw.pttl(k) <= ttl
    raw.delete(*keys[:3])
    d = rp.call(lim.hit("u"))
    assert not d.allowed and [s.remaining for s in d.policies[:3]] == [5, 3, 3]
    assert raw.exists(*keys[:3]) == 0
    assert rp.call(lim.reset("u")) is True and rp.call(lim.hit("u")).allowed


def test_a_multi_hit_over_garbage_replaces_it_and_charges_each_policy_once(
    rp: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage under a later policy's key (the short path charged the bucket before it met it)
    takes the general path with the bucket as it was: charged once, the garbage replaced."""
    lim = make(rp, "multi", [Policy.token_bucket(1, 5, per=3600), Policy.sliding(5, 3600)], name="junk")
    raw = rp.backend.sync_client()
    bucket, log = lim.keys("v")
    raw.delete(bucket, log)
    raw.rpush(log, "junk")
    with caplog.at_level("WARNING", logger="redispatterns.ratelimit"):
        first = rp.call(lim.hit("v"))
        second = rp.call(lim.hit("v"))
    assert first.allowed and [s.remaining for s in first.policies] == [4, 4]
    assert second.allowed and [s.remaining for s in second.policies] == [3, 3]
    assert raw.type(log) == b"zset" and raw.zcard(log) == 2
    assert len([r for r in caplog.records if r.name == "redispatterns.ratelimit"]) == 1


def test_a_sliding_log_hit_on_the_server_clock_answers_exactly(rp: Harness) -> None:
    """The log's hit of cost 1 on the server clock (TIME's text names the entry; a denial
    answers retry and reset alone): remaining counts down, a denial waits for the oldest
    entry and resets with the newest, and the log holds one member per admitted hit."""
    lim = make(rp, "sliding", 3, 3600, name="server-clock")
    raw = rp.backend.sync_client()
    (key,) = lim.keys("w")
    assert [rp.call(lim.hit("w")).remaining for _ in range(3)] == [2, 1, 0]
    members = raw.zrange(key, 0, -1, withscores=True)
    assert len(members) == 3 and all(int(m) == int(s) for m, s in members)  # the time it names
    oldest, newest = int(members[0][1]), int(members[-1][1])
    d = rp.call(lim.hit("w"))
    now = int(raw.time()[0]) * 1_000_000 + int(raw.time()[1])
    assert not d.allowed and d.remaining == 0 and d.policies[0].remaining == 0
    assert d.retry_after_us is not None
    assert oldest + 3_600_000_000 - now <= d.retry_after_us <= 3_600_000_000  # the oldest must leave
    assert d.reset_after_us - d.retry_after_us == newest - oldest
    # the key lives to the end of the window after the one the newest entry is in: one to two windows
    assert raw.zcard(key) == 3 and 3_599_000 < raw.pttl(key) <= 7_200_000


_LOG_STATE = (
    "return {redis.call('PTTL', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1]),"
    " redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}"
)


def log_state(raw: Any, key: str) -> tuple[int, int, list[int]]:
    """A sliding log's key, read at once (a script: Cluster routes it by the key): its absolute
    expiry in ms (PEXPIRETIME, exact: a server time read beside a PTTL is not, on fakeredis,
    whose TIME and expiry clocks drift milliseconds apart under load), its TTL and its entries'
    scores, oldest first."""
    ttl, at, flat = raw.eval(_LOG_STATE, 1, key)
    return int(at), int(ttl), [int(x) for x in flat[1::2]]


def test_sliding_log_key_outlives_its_oldest_entry_by_two_windows(rp: Harness) -> None:
    """A log above 16 gets its key's expiry when it starts (two windows after its first entry)
    and keeps it while every entry stays in the window: later hits of cost 1 write no TTL."""
    lim = make(rp, "sliding", 100, 60, name="expiry")
    raw = rp.backend.sync_client()
    (key,) = lim.keys("w")

    assert rp.call(lim.hit("w")).remaining == 99
    first = int(raw.zrange(key, 0, 0, withscores=True)[0][1])
    _, ttl, _ = log_state(raw, key)
    assert 119_000 < ttl <= 120_002
    at = raw.pexpiretime(key)  # the absolute expiry, exact (no clock read beside a PTTL)
    # two windows on, to the millisecond above (PEXPIREAT of an absolute time: exact on fakeredis
    # too, whose TIME and expiry clocks drift apart by milliseconds under load)
    assert first + 120_000_000 < at * 1000 <= first + 120_001_000
    for i in range(1, 8):
        assert rp.call(lim.hit("w")).remaining == 99 - i
        assert raw.pexpiretime(key) == at  # every entry still in the window: the expiry stays
    assert raw.zcard(key) == 8


@pytest.mark.parametrize("limit", [3, 40])  # a log of 16 or less and one above
def test_sliding_log_key_outlives_every_entry_across_paths(rp: Harness, limit: int) -> None:
    """On the server clock, with a short window: hits of cost 1, of cost 2, and multi checks
    sharing the key (every writer of the log), spread so that entries leave the window between
    hits. After each admitted call the key outlives its newest entry by a window (exact counting
    never loses a live entry), and a log above 16 outlives its oldest by two (what lets a hit
    that drops nothing leave the TTL alone) and its newest by at most two and a half; every
    answer matches the log's live entries."""
    window = 0.4
    w_us = int(window * 1e6)
    single = make(rp, "sliding", limit, window, name="paths")
    multi = make(rp, "multi", [Policy.sliding(limit, window), Policy.token_bucket(10_000)], name="paths")
    raw = rp.backend.sync_client()
    (key,) = single.keys("s")
    assert multi.keys("s")[0] == key  # one log, two scripts
    rng = random.Random(limit)
    admitted = 0
    # Redis freezes the clock for a script: a relative expiry and TIME read the same instant.
    # fakeredis bases a relative expiry (PEXPIRE) on when the call arrived and TIME on the live
    # clock, milliseconds apart on a loaded machine (measured: a PEXPIRE 1000 landed 1000 ms
    # after the script's first TIME and 985 ms after a TIME read 15 ms later)
    slack = 25_000 if rp.backend.is_fake else 2_000
    for i in range(36):
        time.sleep(rng.choice([0, 0, 0.01, 0.05, 0.15, 0.3]))
        cost = 2 if i % 9 == 8 else 1
        d = rp.call((multi if i % 3 == 2 else single).hit("s", cost))
        at, ttl, entries = log_state(raw, key)
        if not d.allowed:
            continue
        admitted += 1
        assert ttl > 0, (i, ttl)
        newest = entries[-1]
        live = [t for t in entries if t > newest - w_us]
        assert d.remaining == limit - len(live), (i, d.remaining, len(live))
        assert at * 1000 >= newest + w_us - slack, (i, at * 1000 - newest)
        if limit > 16:
            oldest = entries[0]
            assert at * 1000 >= oldest + 2 * w_us - slack, (i, at * 1000 - oldest)
            assert at * 1000 <= newest + 2.5 * w_us + 4_000, (i, at * 1000 - newest)
    assert admitted > 8


@pytest.mark.parametrize("subject", ["user:42", "usér:ü"])
def test_prebuilt_ops_address_the_keys_reset_and_keys_name(rp: Harness, subject: str) -> None:
    """A hit's prebuilt op (ASCII keys as bytes) and every other path (keys(), reset(), a cost
    other than 1) name the same Redis keys."""
    lim = make(rp, "fixed", 3, 3600, name="same-keys")
    raw = rp.backend.sync_client()
    (key,) = lim.keys(subject)
    assert rp.call(lim.hit(subject)).remaining == 2
    assert raw.exists(key) == 1
    assert rp.call(lim.hit(subject, 2)).remaining == 0  # another path: the same state
    assert not rp.call(lim.peek(subject)).allowed
    assert rp.call(lim.reset(subject)) is True and raw.exists(key) == 0
    assert rp.call(lim.hit(subject)).remaining == 2


@pytest.mark.parametrize("limit", [4, 40, 150])  # counted by ZCOUNT; by ZCARD, listpack and skiplist
def test_sliding_log_hits_of_cost_one_match_the_oracle_and_keep_only_live_entries(
    rp: Harness, limit: int
) -> None:
    """Hits of cost 1 on a virtual clock (the script's common path: a small limit's log counted
    by ZCOUNT; a larger one's deciding entry read first when full, what left the window dropped
    before counting; ties within one microsecond; now and then a peek or a cost-2 hit on the
    other path) answer as the oracle does, and after an admitted hit the larger log holds
    exactly the live entries."""
    from tests.ratelimit_oracles import SlidingLogOracle

    rng = random.Random(limit)
    clock = VClock()
    window = 2_000_000
    lim = make(rp, "sliding", limit, window / 1e6, _test_clock=clock)
    oracle = SlidingLogOracle(limit, window)
    (key,) = lim.keys("cost-one")
    raw = rp.backend.sync_client()
    gap = window // limit  # the mean gap at which the log stays about full
    steps = [0, 0, 1, 7, gap // 3, gap, gap, 2 * gap, 3 * gap]
    denied = 0
    for i in range(6 * limit):
        clock.now += rng.choice(steps) if i % (2 * limit) else window // 2
        cost, peek = (2, False) if i % 37 == 36 else (1, i % 23 == 22)
        d = rp.call(lim.peek("cost-one", cost) if peek else lim.hit("cost-one", cost))
        allowed, remaining, retry, reset = oracle.evaluate(clock.now, cost)
        if allowed and peek:
            remaining += cost  # a peek charges nothing: what is left now
        assert (d.allowed, d.remaining, d.retry_after_us) == (allowed, remaining, retry), i
        if not allowed:
            assert d.reset_after_us == reset, i
            denied += 1
        elif not peek:
            oracle.commit(clock.now, cost)
            live = len(oracle.live(clock.now))
            if cost == 1 and limit > 16:  # a larger log drops what left before it counts
                assert raw.zcard(key) == live, i
            else:  # a small one, one charging call in eight (its ZCOUNT walks the rest)
                assert live <= raw.zcard(key) <= live + 64, i
    assert rp.call(lim.hit("cost-one", 0)).remaining == max(0, limit - len(oracle.live(clock.now)))
    assert 6 * limit // 10 < denied < 5 * limit  # full logs denied and freed again, many times


@pytest.mark.parametrize("log_limit", [6, 40])  # the multi script counts a small log by ZCOUNT
def test_multi_hits_of_cost_one_with_a_sliding_log_match_the_oracle(rp: Harness, log_limit: int) -> None:
    """A sliding log beside a token bucket, hit at about its pace (cost 1, the multi script's
    short path; denials go the general way): every reply equals the oracle's, and a larger log
    holds only its live entries after an admitted hit."""
    from tests.ratelimit_oracles import SlidingLogOracle, oracle_for, oracle_hit

    rng = random.Random(log_limit)
    clock = VClock()
    pols = (Policy.sliding(log_limit, 2), Policy.token_bucket(50, 60, per=1.0))
    lim = make(rp, "multi", pols, _test_clock=clock)
    oracles = [oracle_for(p) for p in pols]
    log = oracles[0]
    assert isinstance(log, SlidingLogOracle)
    raw = rp.backend.sync_client()
    key = lim.keys("m1")[0]
    gap = 2_000_000 // log_limit
    for i in range(8 * log_limit):
        clock.now += rng.choice([0, 1, gap // 2, gap, gap, 2 * gap]) if i % (3 * log_limit) else 1_000_000
        d = rp.call(lim.hit("m1"))
        want = oracle_hit(oracles, clock.now, 1)
        got = [d.now_us, int(d.allowed)]
        for s in d.policies:
            got += [int(s.allowed), s.remaining, -1 if s.retry_after_us is None else s.retry_after_us]
            got.append(s.reset_after_us)
        assert got == want, i
        if d.allowed and log_limit > 16:
            assert raw.zcard(key) == len(log.live(clock.now)), i
