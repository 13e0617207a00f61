"""Lock flows on canned replies: acquire/wait/timeout, release codes, extend, renewal and Redlock math."""

from __future__ import annotations

import math
from typing import Any

import pytest

from redispatterns._core import lock as core
from redispatterns._core import redlock as rl
from redispatterns._core import semaphore as sem
from redispatterns._core.keys import Keyspace, slot
from redispatterns._core.ops import BlockingPop, Command, Compute, FanOut, Now, Script, Sleep
from redispatterns._core.scripts import load
from redispatterns.errors import CrossSlotError, LockLost, LockNotOwned, LockTimeout
from redispatterns.testing import replay, trace
from redispatterns.testing.replay import ReplayMismatch

KEYS = core.lock_keys(Keyspace("t:"), "job:7")


def test_keys_share_one_slot_and_the_prefix() -> None:
    assert KEYS.lock == "t:lock:{job:7}"
    assert KEYS.fence == "t:lock:{job:7}:fence"
    all_keys = (KEYS.lock, KEYS.fence, KEYS.signal, KEYS.released, KEYS.waiters)
    assert len({slot(k) for k in all_keys}) == 1
    assert all(k.startswith("t:") for k in all_keys)


@pytest.mark.parametrize(
    ("name", "exc"), [(1, TypeError), ("", ValueError), ("a{b}", ValueError), ("a}", ValueError)]
)
def test_bad_names(name: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        core.check_name(name)


@pytest.mark.parametrize(
    ("ttl", "exc"),
    [(None, TypeError), (True, TypeError), ("1", TypeError), (0, ValueError), (-1, ValueError),
     (math.inf, ValueError), (math.nan, ValueError), (0.001, ValueError)],
)  # fmt: skip
def test_bad_ttls(ttl: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        core.check_ttl(ttl)


def test_name_passes_and_validators_accept_good_values() -> None:
    assert core.check_name("x") == "x"
    assert core.check_ttl(0.5, "node_timeout") == 0.5


def test_timeouts() -> None:
    assert core.check_timeout(None) is None
    assert core.check_timeout(0) == 0.0
    for bad, exc in ((-1, ValueError), (math.nan, ValueError), ("x", TypeError), (False, TypeError)):
        with pytest.raises(exc):
            core.check_timeout(bad)


def test_to_ms_never_zero() -> None:
    assert core.to_ms(0.0001) == 1
    assert core.to_ms(1.5) == 1500


def _acq(reply: Any, nonce: str = "", waiting: bool = True) -> tuple[Any, Any]:
    keys = (KEYS.lock, KEYS.fence, KEYS.signal, KEYS.waiters)
    margin = core.WAITERS_MARGIN_MS if waiting else 0
    return (Script(load("lock_acquire"), keys=keys, args=("tok", 1000, nonce, margin)), reply)


def _try(reply: Any) -> tuple[Any, Any]:
    """The uncontended attempt: the two keys and two arguments of SET NX PX + INCR, as bytes
    (encoded once, not by redis-py on every call). ``[fence, pttl]`` is written as the pair it
    means; the script's one integer is the fence, or ``-1 - pttl`` when refused."""
    if isinstance(reply, list):
        reply = reply[0] if reply[0] else -1 - reply[1]
    op = Script(load("lock_try"), keys=(KEYS.lock.encode(), KEYS.fence.encode()), args=("tok", b"1000"))
    return (op, reply)


def test_uncontended_acquire_is_one_script() -> None:
    grant = replay(core.acquire(KEYS, "tok", 1000, name="job:7"), [(Now(), 5.0), _try([7, 0])])
    assert grant == core.Grant(7, 5.0)


def test_non_blocking_acquire_returns_none() -> None:
    steps = [(Now(), 5.0), _try([0, 400])]  # a single try does not count as a waiter
    assert replay(core.acquire(KEYS, "tok", 1000, name="j", blocking=False), steps) is None
    assert replay(core.try_acquire(KEYS, "tok", 1000), [_try([0, 400])]) == (0, 400)
    assert replay(core.try_acquire(KEYS, "tok", 1000, "n"), [_acq([0, 400], "n", waiting=False)]) == (0, 400)


def test_a_refused_try_retries_as_a_waiter_before_blocking() -> None:
    """The second attempt marks "someone waits", so a release between the two hands over."""
    steps = [_try([0, 400]), _acq([5, 0])]
    assert replay(core.acquire(KEYS, "tok", 1000, name="j", started_at=2.0), steps) == core.Grant(5, 2.0)


def test_blocking_acquire_waits_on_the_signal_bounded_by_the_holder_ttl() -> None:
    flow = core.acquire(KEYS, "tok", 1000, name="j", rand=lambda: 0.0)
    steps = [
        (Now(), 1.0),
        _try([0, 400]),
        _acq([0, 400]),
        (Now(), 1.0),
        (BlockingPop(KEYS.signal, 0.4), [b"sig", b"nonce-1"]),  # woken by a hand-over
        (Now(), 1.2),
        _acq([3, 0], nonce="nonce-1"),  # presents the nonce it was handed
    ]
    assert replay(flow, steps) == core.Grant(3, 1.2)


def test_the_block_is_bounded_by_the_timeout_left() -> None:
    flow = core.acquire(KEYS, "tok", 1000, name="j", timeout=0.1, rand=lambda: 0.0)

    def blocks_the_timeout(op: Any) -> bool:
        return isinstance(op, BlockingPop) and abs(op.seconds - 0.1) < 1e-9

    steps = [(Now(), 1.0), _try([0, 400]), _acq([0, 400]), (Now(), 1.0), (blocks_the_timeout, None),
             (Now(), 1.1), _acq([0, 300]), (Now(), 1.1)]  # fmt: skip
    with pytest.raises(LockTimeout) as info:
        replay(flow, steps)
    assert info.value.name == "j" and info.value.timeout == 0.1


def test_a_timed_out_block_retries_without_a_nonce() -> None:
    flow = core.acquire(KEYS, "tok", 1000, name="j", rand=lambda: 0.0, started_at=7.0)
    steps = [
        _try([0, 100]),
        _acq([0, 100]),
        (Now(), 7.0),
        (BlockingPop(KEYS.signal, 0.1), None),
        (Now(), 7.1),
        _acq([4, 0]),
    ]
    assert replay(flow, steps) == core.Grant(4, 7.1)


def test_handoff_window() -> None:
    assert core.handoff_ms(30_000) == core.HANDOFF_MS
    assert core.handoff_ms(100) == 100  # never longer than the lease


def test_wait_bound() -> None:
    assert core.wait_bound(400, None, 0.0) == 0.4
    assert 0.4 < core.wait_bound(400, None, 1.0) <= 0.45  # jitter: at most 10% / 50 ms
    assert core.wait_bound(400, 0.1, 1.0) == 0.1  # the caller's timeout wins
    assert core.wait_bound(-1, None, 0.5) == core.MAX_BLOCK  # a key without expiry: recheck
    assert core.wait_bound(10**9, None, 0.5) == core.MAX_BLOCK
    assert core.wait_bound(0, None, 0.0) == core.MIN_BLOCK  # never BLPOP 0 (forever)
    assert core.wait_bound(400, None, 0.0, max_block=0.2) == 0.2


def _rel(reply: Any) -> tuple[Any, Any]:
    keys = (KEYS.lock, KEYS.signal, KEYS.released, KEYS.waiters)
    return (Script(load("lock_release"), keys=keys, args=("tok", 1000, 250)), reply)


def _rel_try(reply: Any) -> tuple[Any, Any]:
    keys = (KEYS.lock.encode(), KEYS.waiters.encode(), KEYS.released.encode())
    return (Script(load("lock_release_try"), keys=keys, args=("tok",)), reply)


def test_release_codes() -> None:
    assert replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(1)]) is True
    assert replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(2)]) is False
    with pytest.raises(LockNotOwned, match="another owner"):
        replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(-1)])
    with pytest.raises(LockNotOwned, match="expired"):
        replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(0)])


def test_a_release_with_waiters_hands_over_in_a_second_script() -> None:
    assert replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(3), _rel(1)]) is True
    with pytest.raises(LockNotOwned, match="another owner"):  # the lease ran out in between
        replay(core.release(KEYS, "tok", 500, name="j"), [_rel_try(3), _rel(-1)])


def test_extend_codes() -> None:
    ext = Script(load("lock_extend"), keys=(KEYS.lock,), args=("tok", 2000))
    assert replay(core.extend(KEYS, "tok", 2000, name="j"), [(Now(), 3.0), (ext, 1)]) == 3.0
    with pytest.raises(LockNotOwned, match="another owner"):
        replay(core.extend(KEYS, "tok", 2000, name="j"), [(Now(), 3.0), (ext, -1)])
    with pytest.raises(LockNotOwned, match="not recreated"):
        replay(core.extend(KEYS, "tok", 2000, name="j"), [(Now(), 3.0), (ext, 0)])


def test_holder_owned_pttl() -> None:
    assert replay(core.holder(KEYS), [(Command("GET", KEYS.lock), None)]) is None
    assert replay(core.owned(KEYS, "tok"), [(Command("GET", KEYS.lock), b"tok")]) is True
    assert replay(core.owned(KEYS, "tok"), [(Command("GET", KEYS.lock), "other")]) is False
    assert replay(core.pttl(KEYS), [(Command("PTTL", KEYS.lock), -2)]) is None
    assert replay(core.pttl(KEYS), [(Command("PTTL", KEYS.lock), -1)]) == math.inf
    assert replay(core.pttl(KEYS), [(Command("PTTL", KEYS.lock), 1500)]) == 1.5


def test_fence_guard_shares_the_resource_slot() -> None:
    for key in ("plain", "t:fenced:{acct}", "a{b}c"):
        guard = core.fence_guard_key(key)
        assert slot(guard) == slot(key)
    ops, ok = trace(core.fenced_set("plain", b"v", 4, 0), lambda op: 1)
    assert ok is True and isinstance(ops[0], Script) and ops[0].args == (4, b"v", 0)
    _, ok = trace(core.fenced_set("plain", b"v", 3, 10), lambda op: 0)
    assert ok is False
    assert replay(core.get_raw("k"), [(Command("GET", "k"), "s")]) == b"s"
    assert replay(core.get_raw("k"), [(Command("GET", "k"), None)]) is None


def test_keys_in_two_slots_are_refused() -> None:
    with pytest.raises(CrossSlotError):
        Script(load("lock_fenced_set"), keys=("{a}x", "{b}y"), args=(1, b"", 0))


def test_valid_until_subtracts_drift() -> None:
    assert core.drift_ms(10_000) == 102
    assert core.valid_until(100.0, 10_000) == pytest.approx(100.0 + 9.898)


def test_renewal_decisions() -> None:
    assert core.renew_delay(3.0, 0.0) == pytest.approx(0.9)
    assert core.renew_delay(3.0, 1.0) == pytest.approx(1.1)
    assert core.renew_retry_delay(0.0, 0, 0.5) is None
    assert core.renew_retry_delay(-1.0, 3, 0.5) is None
    first = core.renew_retry_delay(2.0, 0, 1.0)
    later = core.renew_retry_delay(2.0, 4, 1.0)
    assert first is not None and later is not None and 0 < first < later <= 0.5
    tight = core.renew_retry_delay(0.004, 5, 1.0)
    assert tight is not None and tight <= 0.004  # never sleep past the lease


def _ext(reply: Any) -> tuple[Any, Any]:
    return (Script(load("lock_extend"), keys=(KEYS.lock,), args=("tok", 3000)), reply)


def test_renewal_extends_at_a_third_and_records_each_renewal() -> None:
    lease = core.Lease.granted(3.0, 3000, 0.0)
    flow = core.renewal(KEYS, "tok", lease, name="j", rand=lambda: 0.5)
    steps = [(Sleep(1.0), 1.0), (Now(), 1.0), _ext(1), (Sleep(1.0), 2.0), (Now(), 2.0), _ext(1)]
    with pytest.raises(ReplayMismatch):  # it runs until its driver stops it
        replay(flow, steps)
    assert lease.deadline == pytest.approx(core.valid_until(2.0, 3000)) and lease.lost is None


def test_renewal_loss_is_recorded_once_and_reported_to_on_lost() -> None:
    seen: list[Any] = []
    lease = core.Lease.granted(3.0, 3000, 0.0)
    holder = object()
    flow = core.renewal(
        KEYS, "tok", lease, name="j", on_lost=seen.append, holder=lambda: holder, rand=lambda: 0.5
    )
    steps = [(Sleep(1.0), 1.0), (Now(), 1.0), _ext(-1), (Compute(seen.append, (holder,)), None)]
    assert replay(flow, steps) == "lock 'j' lost"
    assert isinstance(lease.lost, LockNotOwned) and lease.valid_for(1.0) == 0.0
    assert not lease.mark_lost(RuntimeError())  # once
    with pytest.raises(LockLost, match="was lost"):
        lease.check("lock", "j", 1.0)


def test_renewal_retries_transient_errors_while_the_lease_is_valid() -> None:
    lease = core.Lease.granted(3.0, 3000, 0.0)  # valid until ~2.97
    flow = core.renewal(KEYS, "tok", lease, name="j", rand=lambda: 0.0)
    steps = [
        (Sleep(0.9), 0.9), (Now(), 0.9), _ext(ConnectionError()),
        (Now(), 0.9), (lambda op: isinstance(op, Sleep) and op.seconds < 0.1, 1.0),
        (Now(), 1.0), _ext(ConnectionError()),
        (Now(), 3.5),  # the lease ran out meanwhile: lost, nobody to tell
    ]  # fmt: skip
    assert replay(flow, steps) == "lock 'j' lost"
    assert isinstance(lease.lost, ConnectionError)
    released = core.Lease.granted(3.0, 3000, 0.0)
    released.released = True
    assert not released.mark_lost(RuntimeError()) and released.valid_for(0.0) == 0.0
    with pytest.raises(LockLost, match="released by this holder"):
        released.check("lock", "j", 0.0)
    with pytest.raises(LockLost, match="ran out"):
        core.Lease.granted(3.0, 3000, 0.0).check("semaphore", "s", 9.0)
    assert str(core.lost_in_block("semaphore", "s", RuntimeError("x"))) == (
        "semaphore 's' was lost before the block ended: x"
    )


def test_quorum_and_validity() -> None:
    assert [rl.quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert rl.redlock_validity_ms(10_000, 0.0) == 10_000 - 102
    assert rl.redlock_validity_ms(10_000, 0.2501) == 10_000 - 251 - 102
    assert rl.redlock_retry_delay(0.2, 0.0) == 0.1
    assert rl.redlock_retry_delay(0.2, 0.999) < 0.3
    v = rl.RedlockVote(3, 5, 100, 0.01, 2.0)
    assert v.acquired and v.deadline == pytest.approx(2.1)
    assert not rl.RedlockVote(2, 5, 100, 0.01).acquired
    assert not rl.RedlockVote(5, 5, 0, 0.01).acquired


MASTERS = rl.Masters((object(), object(), object()), "t:redlock:{r}", 0.05)


def _fan(action: str, args: Any) -> Any:
    """Matches the fan-out of ``action`` (acquire / release / extend) with ``args`` to every master."""
    node = {"acquire": rl.node_acquire, "release": rl.node_release, "extend": rl.node_extend}[action]

    def match(op: Any) -> bool:
        if not isinstance(op, FanOut) or op.clients != MASTERS.clients or op.timeout != 0.05:
            return False
        make: Any = op.make
        return make.func is node and make.args == (MASTERS.key, *args)

    return match


def test_redlock_round_acquires_on_a_majority() -> None:
    flow = rl.redlock_acquire(MASTERS, "tok", 1000, name="r", retries=0, retry_delay=0.1)
    steps = [(Now(), 0.0), (Now(), 0.0), (_fan("acquire", ("tok", 1000)),
             [True, True, OSError(), False, True]), (Now(), 0.05)]  # fmt: skip
    vote = replay(flow, steps)
    assert vote.votes == 3 and vote.validity_ms == 1000 - 50 - 12


def test_redlock_failure_releases_everywhere_then_retries_then_times_out() -> None:
    flow = rl.redlock_acquire(MASTERS, "tok", 1000, name="r", retries=1, retry_delay=0.1, rand=lambda: 0.5)
    acquire = _fan("acquire", ("tok", 1000))
    release = _fan("release", ("tok",))
    steps = [
        (Now(), 0.0),
        (Now(), 0.0), (acquire, [True, True, False, False, False]), (Now(), 0.01),
        (release, [True, True, False, False, False]), (Now(), 0.01), (Sleep(0.1), 0.11),
        (Now(), 0.11), (acquire, [True, True, True, True, True]), (Now(), 1.2),  # too slow: no validity
        (release, [True] * 5), (Now(), 1.2),
    ]  # fmt: skip
    with pytest.raises(LockTimeout, match="5 of 5 masters agreed") as info:
        replay(flow, steps)
    assert info.value.name == "r"


def test_redlock_timeout_stops_retrying_early() -> None:
    flow = rl.redlock_acquire(MASTERS, "tok", 1000, name="r", retries=5, retry_delay=1.0, timeout=0.5)
    steps = [(Now(), 0.0), (Now(), 0.0), (_fan("acquire", ("tok", 1000)), [False] * 3),
             (Now(), 0.01), (_fan("release", ("tok",)), [False] * 3), (Now(), 0.01)]  # fmt: skip
    with pytest.raises(LockTimeout, match="0 of 3"):
        replay(flow, steps)


def test_redlock_release_and_extend() -> None:
    rel = _fan("release", ("tok",))
    assert replay(rl.redlock_release(MASTERS, "tok"), [(rel, [True, False, TimeoutError()])]) == 1
    ext = _fan("extend", ("tok", 1000))
    vote = replay(
        rl.redlock_extend(MASTERS, "tok", 1000, name="r"), [(Now(), 1.0), (ext, [True] * 3), (Now(), 1.01)]
    )
    assert vote.votes == 3
    with pytest.raises(LockNotOwned, match="1 of 3"):
        replay(
            rl.redlock_extend(MASTERS, "tok", 1000, name="r"),
            [(Now(), 1.0), (ext, [True, False, False]), (Now(), 1.01)],
        )


def test_node_flows() -> None:
    set_nx = Command("SET", "k", "tok", "NX", "PX", 100)
    assert replay(rl.node_acquire("k", "tok", 100), [(set_nx, b"OK")]) is True
    assert replay(rl.node_acquire("k", "tok", 100), [(set_nx, None)]) is False
    delete = Script(load("lock_delete_if"), keys=("k",), args=("tok",))
    assert replay(rl.node_release("k", "tok"), [(delete, 1)]) is True
    ext = Script(load("lock_extend"), keys=("k",), args=("tok", 100))
    assert replay(rl.node_extend("k", "tok", 100), [(ext, 0)]) is False


def test_api_symmetry() -> None:
    import inspect

    import redispatterns.lock as mod

    def pub(cls: type) -> dict[str, list[str]]:
        return {
            n: [p for p in inspect.signature(m).parameters if p != "self"]
            for n, m in inspect.getmembers(cls, callable)
            if not n.startswith("_")
        }

    pairs = [n for n in mod.__all__ if n.startswith("Async")]
    assert len(pairs) == 6
    for name in pairs:
        assert pub(getattr(mod, name)) == pub(getattr(mod, name[5:])), name


# --------------------------------------------------------------------------- semaphore

SEM = sem.semaphore_keys(Keyspace("t:"), "api")


def _sacq(reply: Any, margin: int = core.WAITERS_MARGIN_MS) -> tuple[Any, Any]:
    return (
        Script(load("semaphore_acquire"), keys=(SEM.leases, SEM.waiters), args=("tok", 1000, 3, margin)),
        reply,
    )


def test_semaphore_keys_and_limit() -> None:
    assert SEM.leases == "t:semaphore:{api}" and slot(SEM.signal) == slot(SEM.leases) == slot(SEM.waiters)
    assert sem.check_limit(3) == 3
    for bad, exc in ((0, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(exc):
            sem.check_limit(bad)


def test_semaphore_acquire_paths() -> None:
    assert (
        replay(sem.semaphore_acquire(SEM, "tok", 1000, 3, name="api", started_at=2.0), [_sacq([1, 0])]) == 2.0
    )
    flow = sem.semaphore_acquire(SEM, "tok", 1000, 3, name="api", blocking=False, started_at=2.0)
    assert replay(flow, [_sacq([0, 300], margin=0)]) is None

    flow = sem.semaphore_acquire(SEM, "tok", 1000, 3, name="api", rand=lambda: 0.0)
    steps = [(Now(), 1.0), _sacq([0, 300]), (Now(), 1.0), (BlockingPop(SEM.signal, 0.3), [b"s", b"1"]),
             (Now(), 1.1), _sacq([1, 0])]  # fmt: skip
    assert replay(flow, steps) == 1.1
    flow = sem.semaphore_acquire(
        SEM, "tok", 1000, 3, name="api", timeout=0.05, rand=lambda: 0.0, started_at=1.0
    )
    steps = [
        _sacq([0, 300]),
        (Now(), 1.0),
        (lambda op: isinstance(op, BlockingPop) and abs(op.seconds - 0.05) < 1e-9, None),
        (Now(), 1.05),
        _sacq([0, 250]),
        (Now(), 1.06),
    ]
    with pytest.raises(LockTimeout, match="all 3 leases"):
        replay(flow, steps)


def test_semaphore_release_extend_count() -> None:
    rel = Script(load("semaphore_release"), keys=(SEM.leases, SEM.signal, SEM.waiters), args=("tok", 1000, 3))
    assert replay(sem.semaphore_release(SEM, "tok", 3, name="api"), [(rel, 1)]) is None
    with pytest.raises(LockNotOwned, match="expired"):
        replay(sem.semaphore_release(SEM, "tok", 3, name="api"), [(rel, 0)])
    ext = Script(load("semaphore_extend"), keys=(SEM.leases,), args=("tok", 500))
    assert replay(sem.semaphore_extend(SEM, "tok", 500, name="api"), [(Now(), 4.0), (ext, 1)]) == 4.0
    with pytest.raises(LockNotOwned, match="not revived"):
        replay(sem.semaphore_extend(SEM, "tok", 500, name="api"), [(Now(), 4.0), (ext, 0)])
    steps = [
        (Script(load("core_time")), 1_700_000_000_123_456),
        (Command("ZCOUNT", SEM.leases, "(1700000000123", "+inf"), 2),
    ]
    assert replay(sem.semaphore_count(SEM), steps) == 2


def test_lock_keys_are_built_once_per_prefix_and_name() -> None:
    """Built from one tagged key, so every script's keys share a slot; a Lock built per use
    gets the same (cached) object back."""
    for prefix, name in (("rp:", "job:7"), ("{app}:", "x"), ("t:", "#looks-like-a-digest"), ("t:", "ü")):
        keys = core.lock_keys(Keyspace(prefix), name)
        all_keys = (keys.lock, keys.fence, keys.signal, keys.released, keys.waiters)
        assert len({slot(k) for k in all_keys}) == 1
        assert keys.for_try == (keys.lock.encode(), keys.fence.encode())
        assert keys.for_release_try == (keys.lock.encode(), keys.waiters.encode(), keys.released.encode())
        assert core.lock_keys(Keyspace(prefix), name) is keys
    assert core.lock_keys(Keyspace("rp:"), "#x").lock.startswith("rp:lock:{#")  # digested, never forged
    assert core.lock_keys(Keyspace("rp:"), "#x").lock != "rp:lock:{#x}"


def test_a_refused_try_reads_the_holder_pttl_from_one_integer() -> None:
    """``lock_try`` answers one integer: the fence, or ``-1 - pttl`` (0: a key without expiry)."""
    assert replay(core.try_acquire(KEYS, "tok", 1000), [_try(9)]) == (9, 0)
    assert replay(core.try_acquire(KEYS, "tok", 1000), [_try(-401)]) == (0, 400)
    assert replay(core.try_acquire(KEYS, "tok", 1000), [_try(0)]) == (0, -1)
    assert replay(core.try_acquire(KEYS, "tok", 1000), [_try(-1)]) == (0, 0)


def test_lease_arguments_are_sent_as_bytes_built_once() -> None:
    assert core.ms_arg(1500) == b"1500"
    assert core.ms_arg(1500) is core.ms_arg(1500)
