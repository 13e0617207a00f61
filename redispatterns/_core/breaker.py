"""A circuit breaker as a pure state machine: the caller passes the clock in.

``closed``: calls go to Redis; ``threshold`` consecutive failures open it.
``open``: calls skip Redis until ``reset_after`` seconds have passed, then one call is let
through as a probe (``half-open``); its success closes the breaker, its failure re-opens it.

The breaker never sleeps or reads a clock itself. Its fields are plain attributes updated
with single assignments, so sharing one between threads may at worst let one extra probe
through; it never wedges.

It logs twice per outage, never per call: a WARNING when it opens (with the failure that opened
it) and an INFO when a call reaches Redis again and closes it. A probe that fails and re-opens it
logs nothing more. The logger is ``redispatterns.breaker`` unless the owner passes its own
(a limiter passes ``redispatterns.ratelimit``); ``name`` says whose breaker it is.
"""

from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ServerUnavailable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "is_outage", "open_error"]

# socket-level failures (builtin ConnectionError / TimeoutError are OSErrors) and redis-py's own
_OUTAGES = (OSError, RedisConnectionError, RedisTimeoutError)


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "Redis is unreachable" (they count against the breaker)."""
    return isinstance(exc, _OUTAGES)


def open_error(breaker: CircuitBreaker) -> ServerUnavailable:
    """What a call skipped by an open breaker reports (the outage that opened it as the cause)."""
    err = ServerUnavailable(f"Redis skipped: the circuit breaker is open after {breaker.failures} failures")
    err.__cause__ = breaker.last_error
    return err


CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive failures; decides whether a call may use Redis."""

    __slots__ = (
        "_log",
        "_outage",
        "failures",
        "last_error",
        "name",
        "opened_at",
        "probe_at",
        "reset_after",
        "state",
        "threshold",
        "trips",
    )

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_after: float = 1.0,
        name: str = "",
        log: logging.Logger | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"breaker threshold must be an int >= 1, got {threshold!r}")
        if isinstance(reset_after, bool) or not isinstance(reset_after, (int, float)):
            raise TypeError("breaker reset_after must be a number of seconds")
        if not reset_after > 0:
            raise ValueError(f"breaker reset_after must be positive, got {reset_after}")
        self.threshold = threshold
        self.reset_after = float(reset_after)
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_at = 0.0
        self.trips = 0  # how many times it opened
        self.last_error: BaseException | None = None  # the latest Redis error seen (any kind)
        self.name = name
        self._log = log if log is not None else logging.getLogger("redispatterns.breaker")
        self._outage = False  # opened and not closed since: the open was logged, the close will be

    def allow(self, now: float) -> bool:
        """May a call use Redis at monotonic time ``now``? (Open -> half-open after the wait.)"""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if now - self.opened_at >= self.reset_after:
                self.state = HALF_OPEN
                self.probe_at = now
                return True  # this caller is the probe
            return False
        # half-open: one probe is in flight; let another through only if it seems lost
        if now - self.probe_at >= self.reset_after:
            self.probe_at = now
            return True
        return False

    def success(self) -> None:
        """A call reached Redis and got a reply."""
        self.failures = 0
        if self.state != CLOSED:
            self.state = CLOSED
            if self._outage:
                self._outage = False
                self._log.info("%s closed: Redis answers again", self._label())

    def failure(self, now: float, error: BaseException | None = None) -> bool:
        """A call failed to reach Redis (``error``, if given, becomes ``last_error``); returns
        True when this failure opened the breaker."""
        if error is not None:
            self.last_error = error
        if self.state == HALF_OPEN:  # the probe failed: open again, the outage goes on (no log)
            self.state = OPEN
            self.opened_at = now
            self.trips += 1
            return True
        self.failures += 1
        if self.state == CLOSED and self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = now
            self.trips += 1
            if not self._outage:
                self._outage = True
                self._log.warning(
                    "%s opened after %d consecutive failures (last: %r): Redis is skipped for %gs at a time",
                    self._label(), self.failures, self.last_error, self.reset_after,
                )  # fmt: skip
            return True
        return False

    def reset(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self._outage = False

    def _label(self) -> str:
        return f"circuit breaker of {self.name}" if self.name else "circuit breaker"

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} failures={self.failures} trips={self.trips}>"
