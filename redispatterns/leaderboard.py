"""Leaderboards: ``Leaderboard`` (sync) and ``AsyncLeaderboard`` (asyncio), one round trip per call.

>>> board = Leaderboard("arena", rank_mode="competition", windows=("day", "week"))  # doctest: +SKIP
>>> board.submit("ada", 120, data={"country": "UK"})                                # doctest: +SKIP
>>> board.top(10)        # [LeaderboardEntry(rank=1, member="ada", ...), ...]  # doctest: +SKIP

The logic lives in :mod:`redispatterns._core.leaderboard` and the two Lua scripts; these classes
only validate arguments and run the flows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from ._core import leaderboard as core
from ._core import validate
from ._core.leaderboard import (
    LeaderboardEntry,
    LeaderboardError,
    Order,
    RankMode,
    Rolling,
    ScoreOutOfRange,
    SubmitMode,
    TieBreak,
    Window,
)
from ._core.mount import Mount
from ._core.ops import Flow
from ._runner import run_async, run_sync
from .mount import Namespace, resolve

__all__ = [
    "AsyncLeaderboard",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardError",
    "Order",
    "RankMode",
    "Rolling",
    "ScoreOutOfRange",
    "SubmitItems",
    "SubmitMode",
    "TieBreak",
    "Window",
]

SubmitItems = Union[Mapping[str, float], Iterable[Union[tuple[str, float], tuple[str, float, Any]]]]
"""What ``submit_many`` takes: ``{member: score}``, or ``(member, score)`` / ``(member, score,
data)`` tuples."""

_NO_DATA: Any = object()


class _Board:
    """Configuration, validation and flow building shared by both flavours."""

    _asyncio = False

    def __init__(
        self,
        name: str,
        *,
        order: Order = "desc",
        rank_mode: RankMode = "standard",
        tie_break: TieBreak | None = None,
        windows: Iterable[Window] | None = None,
        time_bits: int = 31,
        tie_break_tick: float = 1.0,
        tie_break_epoch: float = 1735689600.0,
        retention: Mapping[str, float] | None = None,
        rolling: Rolling = "best",
        rolling_ttl: float = 5.0,
        clock: Callable[[], float] | None = None,
        mount: Mount | Namespace | None = None,
        client: Any = None,
    ) -> None:
        """A board ``name``.

        ``order``: ``"desc"`` (higher is better) or ``"asc"``. ``rank_mode``: ``"standard"``
        (1,2,3,4), ``"competition"`` (1,2,2,4) or ``"dense"`` (1,2,2,3; keeps a distinct-score
        index beside the board: every writer of a dense board must say ``rank_mode="dense"``).
        ``tie_break="earliest"``: among equal scores, who reached it first ranks first (integer
        scores; ``time_bits`` bits of ``tie_break_tick``-second ticks since ``tie_break_epoch``,
        2025-01-01 UTC: the defaults reach 2093 and hold primaries in ``[-2**22, 2**22)``).
        ``windows``: any of ``"day"``, ``"week"`` (from Monday), ``"month"`` (UTC); each submit
        also updates the current bucket of each, kept ``retention[window]`` seconds after it
        closes. Rolling ``"<N>d"`` views union the last N day buckets (``rolling`` = ``"best"``
        or ``"sum"``) into a cache kept ``rolling_ttl`` seconds. ``clock``: tests only, a virtual
        clock (seconds since the epoch) used instead of the server's TIME.
        """
        if not isinstance(name, str):
            raise TypeError(f"a leaderboard name must be a str, not {type(name).__name__}")
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        validate.seconds(tie_break_tick, "tie_break_tick", minimum=1e-6)
        validate.seconds(rolling_ttl, "rolling_ttl")
        if isinstance(tie_break_epoch, bool) or not isinstance(tie_break_epoch, (int, float)):
            raise TypeError("tie_break_epoch must be seconds since the Unix epoch")
        validate.callable_or_none(clock, "clock", "returning seconds since the epoch")
        wins = tuple(windows or ())
        if isinstance(windows, str):
            raise TypeError("windows must be a tuple of window names, e.g. ('day', 'week')")
        keep = {}
        for w, seconds in (retention or {}).items():
            if w not in core.WINDOWS:
                raise ValueError(f"retention names unknown window {w!r}")
            keep[w] = int(validate.seconds(seconds, f"retention[{w!r}]") * 1000)
        ttl = self._ns.mount.ttl_ms()
        self._clock = clock
        self._spec = core.BoardSpec(
            name=name,
            keyspace=self._ns.keyspace,
            codec=self._ns.mount.codec,
            order=order,
            rank_mode=rank_mode,
            tie_break=tie_break,
            windows=wins,
            time_bits=time_bits,
            tick_us=max(1, round(tie_break_tick * 1_000_000)),
            epoch_us=round(tie_break_epoch * 1_000_000),
            retention_ms=keep,
            rolling=rolling,
            rolling_ttl_ms=max(1, round(rolling_ttl * 1000)),
            ttl_ms=ttl or 0,
        )

    @property
    def name(self) -> str:
        return self._spec.name

    def __repr__(self) -> str:
        s = self._spec
        return (
            f"<{type(self).__name__} {s.name!r} order={s.order} rank_mode={s.rank_mode} windows={s.windows}>"
        )

    # flows ---------------------------------------------------------------

    def _now(self) -> int | None:
        return None if self._clock is None else int(self._clock() * 1_000_000)

    def _window(self, window: str | None) -> str | None:
        if window is not None:
            if not isinstance(window, str):
                raise TypeError("window must be a str such as 'day', 'week', 'month' or '7d'")
            core.view(self._spec, window, 0)  # validates against the board's windows
        return window

    def _write(self, ops: list[core.SubmitOp]) -> Flow[list[float | int | None]]:
        self._ns.check_write("Leaderboard")
        return core.submit(self._spec, ops, self._now())

    def _f_submit(self, member: str, score: float, mode: SubmitMode, data: Any) -> Flow[float | int | None]:
        """The flow of one submit, checked here (not a generator: one layer less per call)."""
        op = core.make_op(self._spec, mode, member, score, data, data is not _NO_DATA)
        self._ns.check_write("Leaderboard")
        return core.submit_one(self._spec, op, self._now())

    def _f_submit_many(self, items: SubmitItems, mode: SubmitMode) -> Flow[list[float | int | None]]:
        if isinstance(items, Mapping):
            items = items.items()
        ops = []
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise TypeError("submit_many takes a mapping or (member, score[, data]) tuples")
            row: tuple[Any, ...] = item
            has = len(row) == 3
            ops.append(core.make_op(self._spec, mode, row[0], row[1], row[2] if has else None, has))
        return (yield from self._write(ops))

    def _f_remove(self, members: tuple[str, ...]) -> Flow[int]:
        ops = [core.make_op(self._spec, "remove", m, 0, None, False) for m in members]
        had = yield from self._write(ops)
        return sum(v is not None for v in had)

    def _read(self, what: str) -> int | None:
        self._ns.check_read(f"Leaderboard.{what}")
        return self._now()

    def _f_top(self, n: int, window: str | None, with_data: bool) -> Flow[list[LeaderboardEntry]]:
        n = core.check_count(n, "n")
        return core.entries(self._spec, self._window(window), self._read("top"), 0, n - 1, with_data)

    def _f_page(
        self, number: int, size: int, window: str | None, with_data: bool
    ) -> Flow[list[LeaderboardEntry]]:
        number = core.check_count(number, "page number", hi=2**40)
        size = core.check_count(size, "page size")
        start = (number - 1) * size
        return core.entries(
            self._spec, self._window(window), self._read("page"), start, start + size - 1, with_data
        )

    def _f_around(
        self, member: str, n: int, window: str | None, with_data: bool
    ) -> Flow[list[LeaderboardEntry]]:
        m = core.check_member(member)
        n = core.check_count(n, "n")
        return core.around(self._spec, self._window(window), self._read("around"), m, n, with_data)

    def _f_entry(self, member: str, window: str | None) -> Flow[LeaderboardEntry | None]:
        m = core.check_member(member)
        return core.entry(self._spec, self._window(window), self._read("entry"), m)

    def _f_rank(self, member: str, window: str | None) -> Flow[int | None]:
        m = core.check_member(member)
        return core.rank(self._spec, self._window(window), self._read("rank"), m)

    def _f_score(self, member: str, window: str | None) -> Flow[float | int | None]:
        m = core.check_member(member)
        return core.score(self._spec, self._window(window), self._read("score"), m)

    def _f_percentile(self, member: str, window: str | None) -> Flow[float | None]:
        m = core.check_member(member)
        return core.percentile_of(self._spec, self._window(window), self._read("percentile"), m)

    def _f_count(self, window: str | None) -> Flow[int]:
        return core.count(self._spec, self._window(window), self._read("count"))

    def _f_set_data(self, member: str, data: Any) -> Flow[None]:
        self._ns.check_write("Leaderboard.set_data")
        return core.set_data(self._spec, core.check_member(member), data)

    def _f_data(self, member: str) -> Flow[Any]:
        self._ns.check_read("Leaderboard.data")
        return core.get_data(self._spec, core.check_member(member))


class Leaderboard(_Board):
    """A ranked board: submit scores, read ranks, pages and windows; one round trip per call."""

    def submit(
        self, member: str, score: float, mode: SubmitMode = "best", *, data: Any = _NO_DATA
    ) -> float | int | None:
        """Record ``score`` (``mode``: ``best`` keeps the better, ``latest`` overwrites, ``incr`` adds);
        ``data`` (optional) is stored beside it. Returns the member's board score afterwards."""
        return run_sync(self._ns.client, self._f_submit(member, score, mode, data))

    def submit_many(self, items: SubmitItems, mode: SubmitMode = "best") -> list[float | int | None]:
        """Several submits (a mapping or ``(member, score[, data])`` tuples) in one script run."""
        return run_sync(self._ns.client, self._f_submit_many(items, mode))

    def remove(self, *members: str) -> int:
        """Remove members (board, data, current window buckets); returns how many were on the board."""
        return run_sync(self._ns.client, self._f_remove(members))

    def score(self, member: str, *, window: str | None = None) -> float | int | None:
        return run_sync(self._ns.client, self._f_score(member, window))

    def rank(self, member: str, *, window: str | None = None) -> int | None:
        """1-based rank per ``rank_mode``; ``None`` when absent."""
        return run_sync(self._ns.client, self._f_rank(member, window))

    def entry(self, member: str, *, window: str | None = None) -> LeaderboardEntry | None:
        """The member's ``LeaderboardEntry`` (rank, score, data) in one round trip; ``None`` when absent."""
        return run_sync(self._ns.client, self._f_entry(member, window))

    def top(
        self, n: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        return run_sync(self._ns.client, self._f_top(n, window, with_data))

    def page(
        self, number: int, size: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        """Page ``number`` (1-based) of ``size`` entries."""
        return run_sync(self._ns.client, self._f_page(number, size, window, with_data))

    def around(
        self, member: str, n: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        """``n`` entries around ``member``, clamped at both ends; ``[]`` when absent."""
        return run_sync(self._ns.client, self._f_around(member, n, window, with_data))

    def percentile(self, member: str, *, window: str | None = None) -> float | None:
        """Share (0-100) of members ranked strictly worse; ``None`` when absent."""
        return run_sync(self._ns.client, self._f_percentile(member, window))

    def count(self, *, window: str | None = None) -> int:
        return run_sync(self._ns.client, self._f_count(window))

    def set_data(self, member: str, data: Any) -> None:
        """Store ``data`` (through the mount's codec) beside ``member``; reads return it."""
        return run_sync(self._ns.client, self._f_set_data(member, data))

    def data(self, member: str) -> Any:
        return run_sync(self._ns.client, self._f_data(member))


class AsyncLeaderboard(_Board):
    """The asyncio twin of :class:`Leaderboard` (same methods, awaited)."""

    _asyncio = True

    async def submit(
        self, member: str, score: float, mode: SubmitMode = "best", *, data: Any = _NO_DATA
    ) -> float | int | None:
        return await run_async(self._ns.client, self._f_submit(member, score, mode, data))

    async def submit_many(self, items: SubmitItems, mode: SubmitMode = "best") -> list[float | int | None]:
        return await run_async(self._ns.client, self._f_submit_many(items, mode))

    async def remove(self, *members: str) -> int:
        return await run_async(self._ns.client, self._f_remove(members))

    async def score(self, member: str, *, window: str | None = None) -> float | int | None:
        return await run_async(self._ns.client, self._f_score(member, window))

    async def rank(self, member: str, *, window: str | None = None) -> int | None:
        return await run_async(self._ns.client, self._f_rank(member, window))

    async def entry(self, member: str, *, window: str | None = None) -> LeaderboardEntry | None:
        return await run_async(self._ns.client, self._f_entry(member, window))

    async def top(
        self, n: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        return await run_async(self._ns.client, self._f_top(n, window, with_data))

    async def page(
        self, number: int, size: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        return await run_async(self._ns.client, self._f_page(number, size, window, with_data))

    async def around(
        self, member: str, n: int = 10, *, window: str | None = None, with_data: bool = True
    ) -> list[LeaderboardEntry]:
        return await run_async(self._ns.client, self._f_around(member, n, window, with_data))

    async def percentile(self, member: str, *, window: str | None = None) -> float | None:
        return await run_async(self._ns.client, self._f_percentile(member, window))

    async def count(self, *, window: str | None = None) -> int:
        return await run_async(self._ns.client, self._f_count(window))

    async def set_data(self, member: str, data: Any) -> None:
        return await run_async(self._ns.client, self._f_set_data(member, data))

    async def data(self, member: str) -> Any:
        return await run_async(self._ns.client, self._f_data(member))
