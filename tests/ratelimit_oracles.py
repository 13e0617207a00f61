"""Pure-Python oracles of the rate-limit algorithms, for the property and Lua contract tests.

Independent models of each algorithm on a virtual clock (integer µs): ``oracle_hit`` says what
``lua/ratelimit_hit.lua`` must reply. They live with the tests, not in the package: nothing in
``redispatterns`` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from redispatterns._core.ratelimit import MODE_HIT, MODE_PEEK, MODE_PENALTY, Policy

__all__ = [
    "FixedWindowOracle",
    "Oracle",
    "SlidingCounterOracle",
    "SlidingLogOracle",
    "TokenBucketOracle",
    "oracle_for",
    "oracle_hit",
]

# Independent models of each algorithm on a virtual clock (integer µs), for property tests.
# Each ``evaluate(now, cost)`` returns (allowed, remaining, retry_after_us or None, reset_after_us)
# without changing state; ``commit(now, cost, allowed)`` applies the outcome.


class SlidingLogOracle:
    """A plain list of admitted timestamps; an entry at ``t`` counts while ``now < t + window``."""

    def __init__(self, limit: int, window_us: int) -> None:
        self.limit, self.window = limit, window_us
        self.log: list[int] = []

    def live(self, now: int) -> list[int]:
        return sorted(t for t in self.log if now < t + self.window)

    def evaluate(self, now: int, cost: int) -> tuple[bool, int, int | None, int]:
        live = self.live(now)
        reset = (live[-1] + self.window - now) if live else 0
        if cost > self.limit:
            return False, max(0, self.limit - len(live)), None, reset
        if len(live) + cost <= self.limit:
            return True, self.limit - len(live) - cost, 0, reset
        # the request fits once len(live) + cost - limit entries have left
        must_leave = live[len(live) + cost - self.limit - 1]
        return False, max(0, self.limit - len(live)), must_leave + self.window - now, reset

    def commit(self, now: int, cost: int, penalty: bool = False) -> None:
        self.log = self.live(now) + [now] * cost
        if penalty and len(self.log) > self.limit:
            self.log = self.log[-self.limit :]

    def reset_after_commit(self, now: int, cost: int) -> int:
        return self.window if cost else self.evaluate(now, 0)[3]


class TokenBucketOracle:
    """A token bucket with exact rational refill: ``capacity`` tokens, one per ``interval_us``."""

    def __init__(self, capacity: int, interval_us: int) -> None:
        self.capacity, self.interval = capacity, interval_us
        self.tokens = Fraction(capacity)
        self.at: int | None = None

    def level(self, now: int) -> Fraction:
        if self.at is None:
            return Fraction(self.capacity)
        return min(Fraction(self.capacity), self.tokens + Fraction(now - self.at, self.interval))

    def evaluate(self, now: int, cost: int) -> tuple[bool, int, int | None, int]:
        tokens = self.level(now)
        avail = math.floor(tokens)
        reset = math.ceil((self.capacity - tokens) * self.interval)
        if cost > self.capacity:
            return False, avail, None, reset
        if tokens >= cost:
            return True, avail - cost, 0, reset
        return False, avail, math.ceil((cost - tokens) * self.interval), reset

    def commit(self, now: int, cost: int, penalty: bool = False) -> None:
        tokens = self.level(now) - cost
        if penalty:
            tokens = max(tokens, min(self.level(now), Fraction(0)))
        self.tokens, self.at = tokens, now

    def reset_after_commit(self, now: int, cost: int) -> int:
        return math.ceil((self.capacity - self.level(now)) * self.interval)


class FixedWindowOracle:
    """A count per epoch-aligned window index."""

    def __init__(self, limit: int, window_us: int) -> None:
        self.limit, self.window = limit, window_us
        self.counts: dict[int, int] = {}

    def evaluate(self, now: int, cost: int) -> tuple[bool, int, int | None, int]:
        idx = now // self.window
        count = self.counts.get(idx, 0)
        reset = (idx + 1) * self.window - now
        if cost > self.limit:
            return False, max(0, self.limit - count), None, reset
        if count + cost <= self.limit:
            return True, self.limit - count - cost, 0, reset
        return False, max(0, self.limit - count), reset, reset

    def commit(self, now: int, cost: int, penalty: bool = False) -> None:
        idx = now // self.window
        self.counts[idx] = min(self.limit, self.counts.get(idx, 0) + cost)

    def reset_after_commit(self, now: int, cost: int) -> int:
        return self.evaluate(now, 0)[3]


class SlidingCounterOracle:
    """Counts per aligned window; the estimate in exact rationals."""

    def __init__(self, limit: int, window_us: int) -> None:
        self.limit, self.window = limit, window_us
        self.counts: dict[int, int] = {}

    def _estimate(self, now: int) -> tuple[int, Fraction, int, int]:
        idx = now // self.window
        cur, prev = self.counts.get(idx, 0), self.counts.get(idx - 1, 0)
        return idx, prev * Fraction(self.window - (now - idx * self.window), self.window) + cur, cur, prev

    def _admits(self, now: int, cost: int) -> bool:
        return self._estimate(now)[1] + cost <= self.limit

    def evaluate(self, now: int, cost: int) -> tuple[bool, int, int | None, int]:
        idx, est, cur, prev = self._estimate(now)
        avail = max(0, math.floor(self.limit - est))
        reset = (idx + 2) * self.window - now if cur else ((idx + 1) * self.window - now if prev else 0)
        if cost > self.limit:
            return False, avail, None, reset
        if est + cost <= self.limit:
            return True, avail - cost, 0, reset
        # the estimate only falls with time: search the first admitting microsecond, window by window
        for w in (idx, idx + 1, idx + 2):
            start = max(now, w * self.window)
            end = (w + 1) * self.window - 1
            if not self._admits(end, cost):
                continue
            lo, hi = start, end  # binary search: monotone within a window
            while lo < hi:
                mid = (lo + hi) // 2
                if self._admits(mid, cost):
                    hi = mid
                else:
                    lo = mid + 1
            return False, avail, lo - now, reset
        raise AssertionError("unreachable: two windows later the estimate is zero")

    def commit(self, now: int, cost: int, penalty: bool = False) -> None:
        idx = now // self.window
        self.counts[idx] = min(self.limit, self.counts.get(idx, 0) + cost)

    def reset_after_commit(self, now: int, cost: int) -> int:
        return self.evaluate(now, 0)[3]


Oracle = SlidingLogOracle | TokenBucketOracle | FixedWindowOracle | SlidingCounterOracle


def oracle_for(policy: Policy) -> Oracle:
    if policy.algorithm == "sliding":
        return SlidingLogOracle(policy.limit, policy.period_us)
    if policy.algorithm == "token_bucket":
        return TokenBucketOracle(policy.limit, policy.period_us)
    if policy.algorithm == "sliding_counter":
        return SlidingCounterOracle(policy.limit, policy.period_us)
    return FixedWindowOracle(policy.limit, policy.period_us)


def oracle_hit(oracles: Sequence[Oracle], now: int, cost: int, mode: int = MODE_HIT) -> list[int]:
    """What ``ratelimit_hit.lua`` must reply for ``oracles`` at ``now``; commits like the script."""
    evals = [o.evaluate(now, cost) for o in oracles]
    all_ok = all(e[0] for e in evals)
    never = any(e[2] is None for e in evals)
    commit = mode != MODE_PEEK and cost > 0 and not never and (all_ok or mode == MODE_PENALTY)
    out = [now, 1 if all_ok else 0]
    for o, (ok, remaining, retry, reset) in zip(oracles, evals, strict=True):
        if ok and not commit:
            remaining += cost
        if commit:
            o.commit(now, cost, penalty=not all_ok)
            reset = o.reset_after_commit(now, cost)
        out += [1 if ok else 0, remaining, -1 if retry is None else retry, reset]
    return out
