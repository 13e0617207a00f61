"""Rate-limit policies: one limit each (algorithm, limit, window), and the rate strings that
name them (``"10/minute"``, ``"5/second;1000/hour"``, ``"10 per 2 minutes"``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALGORITHMS",
    "EXACT_INT",
    "MAX_LIMIT",
    "MAX_PERIOD_US",
    "MODE_HIT",
    "MODE_PEEK",
    "MODE_PENALTY",
    "RATE_FORMS",
    "US",
    "Algorithm",
    "counter_packs",
    "Policy",
    "parse_rate",
    "parse_rates",
]

Algorithm = Literal["sliding", "token_bucket", "fixed", "sliding_counter"]
ALGORITHMS: tuple[str, ...] = ("sliding", "token_bucket", "fixed", "sliding_counter")
_KIND = {"sliding": 1, "token_bucket": 2, "fixed": 3, "sliding_counter": 4}
_SUFFIX = {"sliding": "sw", "token_bucket": "tb", "fixed": "fx", "sliding_counter": "sc"}
EXACT_INT = 2**53  # doubles (Lua numbers) are exact integers below this

MODE_PEEK = 0
MODE_HIT = 1
MODE_PENALTY = 2

US = 1_000_000
MAX_LIMIT = 10**9
MAX_PERIOD_US = 10 * 366 * 86400 * US  # ten years: keeps every sum far below 2**53


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _count(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or value > MAX_LIMIT:
        raise ValueError(f"{name} must be between {minimum} and {MAX_LIMIT}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Policy:
    """One limit: ``limit`` units per ``window`` seconds under ``algorithm``.

    For ``token_bucket``, ``limit`` is the capacity (burst) and ``period_us`` the emission
    interval (µs per token, rounded to an integer, at least 1); ``window`` is the time to refill
    an empty bucket. Build with :meth:`sliding`, :meth:`token_bucket` or :meth:`fixed`.
    """

    algorithm: Algorithm
    limit: int
    period_us: int
    name: str

    def __post_init__(self) -> None:
        if self.algorithm not in _KIND:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        _count("limit", self.limit)
        if isinstance(self.period_us, bool) or not isinstance(self.period_us, int):
            raise TypeError("period_us must be an int")
        if not 1 <= self.period_us <= MAX_PERIOD_US or self.window_us > MAX_PERIOD_US:
            raise ValueError("window out of range: between 1 µs and ten years")
        if self.algorithm == "sliding_counter" and self.limit * self.period_us >= EXACT_INT:
            raise ValueError(
                f"limit x window too large for the sliding counter's exact arithmetic "
                f"({self.limit} per {self.period_us / US:g}s): use a token bucket"
            )
        if not isinstance(self.name, str) or not self.name or not self.name.isprintable() or '"' in self.name:
            raise ValueError(f"policy name must be printable text without quotes, got {self.name!r}")

    @classmethod
    def sliding(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """At most ``limit`` units in any trailing ``window`` seconds (exact, sorted-set log)."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("sliding", limit, period, name or f"{limit}-per-{_secs(period)}s")

    @classmethod
    def token_bucket(
        cls, rate: float, capacity: int | None = None, *, per: float = 1.0, name: str | None = None
    ) -> Policy:
        """A bucket of ``capacity`` tokens (default: ``ceil(rate)``) refilled at ``rate`` per ``per`` s."""
        _number("rate", rate)
        _number("per", per)
        cap = math.ceil(rate) if capacity is None else capacity
        _count("capacity", cap)
        interval = round(per * US / rate)
        if interval < 1:
            raise ValueError(f"rate {rate} per {per}s is above one token per microsecond")
        return cls("token_bucket", cap, interval, name or f"bucket-{cap}-{_rate_text(rate, per)}")

    @classmethod
    def fixed(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """At most ``limit`` units per clock-aligned window of ``window`` seconds."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("fixed", limit, period, name or f"{limit}-per-{_secs(period)}s-fixed")

    @classmethod
    def sliding_counter(cls, limit: int, window: float, *, name: str | None = None) -> Policy:
        """About ``limit`` per trailing ``window`` (Cloudflare's two-counter estimate; 2 integers)."""
        _count("limit", limit)
        period = _period("window", window)
        return cls("sliding_counter", limit, period, name or f"{limit}-per-{_secs(period)}s-approx")

    @classmethod
    def parse(cls, rates: str, *, algorithm: Algorithm = "sliding") -> tuple[Policy, ...]:
        """Policies from a rate string: ``Policy.parse("5/second;1000/hour")``.

        ``algorithm`` is the one every limit uses: ``"sliding"`` (exact, the default),
        ``"token_bucket"`` (capacity = the count, refilled over the window), ``"fixed"`` or
        ``"sliding_counter"``. See :func:`parse_rates` for the accepted forms.
        """
        if algorithm not in _KIND:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        out = []
        for limit, window in parse_rates(rates):
            if algorithm == "token_bucket":
                out.append(cls.token_bucket(limit, limit, per=window))
            else:
                out.append(getattr(cls, algorithm)(limit, window))
        return tuple(out)

    @property
    def kind(self) -> int:
        return _KIND[self.algorithm]

    @property
    def window_us(self) -> int:
        """The quota window: the sliding/fixed window, or the time to refill an empty bucket."""
        return self.period_us * self.limit if self.algorithm == "token_bucket" else self.period_us

    @property
    def window(self) -> float:
        return self.window_us / US

    @property
    def key_suffix(self) -> str:
        """Identifies the state's format and parameters, so a changed policy starts fresh."""
        tag = _SUFFIX[self.algorithm]
        if self.algorithm == "sliding_counter" and counter_packs(self.limit):
            tag = "sx"  # the counter's one-integer state (lua/ratelimit_counter.lua)
        return f"{tag}:{self.limit}:{self.period_us}"

    def header_item(self) -> str:
        """This policy as an item of the IETF ``RateLimit-Policy`` field."""
        return f'"{self.name}";q={self.limit};w={max(1, math.ceil(self.window_us / US))}'


def counter_packs(limit: int) -> bool:
    """Whether the sliding counter keeps its state as one integer (a slot modulo m >= 1024, see
    ``lua/ratelimit_counter.lua``): limits up to about two million per window."""
    return EXACT_INT // ((limit + 1) * (2 * limit + 1)) - 2 >= 1024


def _period(name: str, seconds: object) -> int:
    value = _number(name, seconds)
    period = round(value * US)
    if period < 1:
        raise ValueError(f"{name} must be at least one microsecond")
    return period


def _secs(period_us: int) -> str:
    return str(period_us // US) if period_us % US == 0 else f"{period_us / US:g}"


def _rate_text(rate: float, per: float) -> str:
    return f"{rate:g}-per-{per:g}s"


# --------------------------------------------------------------------------- rate strings

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"(\d+)\s*(?:/|\s+per\s+)\s*(?:(\d+)\s*)?(second|minute|hour|day)s?")
RATE_FORMS = (
    "'<count>/<unit>' or '<count> per [<n>] <unit>', unit one of second, minute, hour, day "
    "(plural allowed), several joined by ';': e.g. '10/minute', '100 per second', "
    "'10 per 2 minutes', '5/second;1000/hour'"
)


def parse_rates(text: object) -> tuple[tuple[int, float], ...]:
    """``"5/second;1000/hour"`` -> ``((5, 1.0), (1000, 3600.0))``: (limit, window in seconds) each.

    Strict: whole positive integers, the units second/minute/hour/day (singular or plural), an
    optional integer multiple (``"10 per 2 minutes"``), ``;`` between limits. Anything else is
    a ``ValueError`` naming the accepted forms.
    """
    if not isinstance(text, str):
        raise TypeError(f"a rate must be a str such as '10/minute', not {type(text).__name__}")
    out = []
    for item in text.split(";"):
        m = _RATE.fullmatch(item.strip())
        if m is None:
            raise ValueError(f"bad rate {item.strip()!r} in {text!r}: expected {RATE_FORMS}")
        limit, mult, unit = int(m[1]), int(m[2] or 1), m[3]
        if limit < 1 or limit > MAX_LIMIT or mult < 1:
            raise ValueError(
                f"bad rate {item.strip()!r}: the count must be 1..{MAX_LIMIT} and the multiple >= 1"
            )
        out.append((limit, float(mult * _UNITS[unit])))
    if len({w for _, w in out}) != len(out):
        raise ValueError(f"bad rate {text!r}: two limits over the same window")
    return tuple(out)


def parse_rate(text: object, what: str) -> tuple[int, float]:
    """One rate (``"10/minute"``) as (limit, window seconds); several are an error naming ``what``."""
    rates = parse_rates(text)
    if len(rates) != 1:
        raise ValueError(f"{what} takes one rate, got {len(rates)} in {text!r}: use MultiLimiter for several")
    return rates[0]
