"""What both session stores share: the configuration, its checks, the read breaker, the
write-behind and summary queues. No I/O: ``session.py`` holds the two flavours' methods."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from ._core import session as core
from ._core import session_tracks as tracks
from ._core import validate
from ._core.breaker import CircuitBreaker
from ._core.ops import Flow
from ._core.session import Session, UserId
from ._core.writebehind import WriteBehind
from ._runner import AsyncQueues, SyncQueues
from ._session_summary import SummaryJobs, SummaryStats
from .errors import SessionConflict
from .mount import Mount, Namespace, resolve

__all__ = ["AppendHook", "GetHook", "OnError", "StoreBase"]

log = logging.getLogger("redispatterns.session")

GetHook = Callable[[Session], "Session | Awaitable[Session | None] | None"]
AppendHook = Callable[[str, Any], Any]
OnError = Literal["raise", "closed"]


def _seconds_ms(name: str, value: object) -> int:
    return max(1, round(validate.seconds(value, name) * 1000))


class StoreBase:
    """The configuration of a session store (both flavours)."""

    _asyncio = False

    def __init__(
        self,
        client: Any = None,
        *,
        mount: Mount | Namespace | None = None,
        ttl: float | None = None,
        lifetime: float = core.DEFAULT_LIFETIME,
        refresh_below: float = 1.0,
        event_limit: int = core.DEFAULT_EVENT_LIMIT,
        revoked_ttl: float = 60.0,
        secret: bytes | str | None = None,
        app_state_ttl: float | None = None,
        user_state_ttl: float | None = None,
        on_get: GetHook | None = None,
        on_append: AppendHook | None = None,
        write_behind: int = 0,
        queue_size: int = 1000,
        track_limit: int | None = None,
        summarizer: Callable[..., Any] | None = None,
        summary_workers: int = 3,
        summary_queue: int = 100,
        summary_timeout: float = 60.0,
        summary_every: int | None = None,
        on_error: OnError = "raise",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``ttl``: idle seconds (default: the mount's TTL, else 1800); ``lifetime``: absolute
        seconds that sliding never extends; ``refresh_below``: slide only when less than this
        fraction of the idle TTL is left (1.0: every read); ``secret``: HMAC key for token ids;
        ``write_behind``: N workers that persist events and state patches in the background.
        ``track_limit``: events kept per track (default ``event_limit``). ``summarizer(events,
        filter_key)``: run by ``summary_workers`` from a queue of ``summary_queue`` jobs with
        ``summary_timeout`` seconds each, on demand (``summarize``) and every ``summary_every``
        appended events. Reads go through ``breaker`` (default: 5 outages open it for 1 s):
        while it is open they skip Redis, and raise ``ServerUnavailable`` at once
        (``on_error="raise"``) or find nothing (``on_error="closed"``: no session, no events).
        The default breaker logs its opening and closing on ``redispatterns.session``."""
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        self._mode = self._ns.mode
        idle = ttl if ttl is not None else (self._ns.ttl or core.DEFAULT_IDLE)
        refresh_below = validate.fraction(refresh_below, "refresh_below", zero_ok=False)
        validate.count(event_limit, "event_limit")
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and (not isinstance(secret, bytes) or len(secret) < 16):
            raise ValueError("secret must be at least 16 bytes")
        validate.callable_or_none(on_get, "on_get", "taking the session")
        validate.callable_or_none(on_append, "on_append", "taking (session_id, event)")
        if on_error not in ("raise", "closed"):
            raise ValueError(f"on_error must be 'raise' or 'closed' (reads find nothing), got {on_error!r}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a redispatterns.CircuitBreaker, not {type(breaker).__name__}")
        # the breaker logs its opening and closing once each (ours on redispatterns.session)
        self.breaker = breaker if breaker is not None else CircuitBreaker(name="session reads", log=log)
        self._cfg = core.SessionConfig(
            keyspace=self._ns.keyspace,
            codec=self._ns.mount.codec,
            idle_ms=_seconds_ms("ttl", idle),
            lifetime_ms=_seconds_ms("lifetime", lifetime),
            refresh_permille=round(refresh_below * 1000),
            event_limit=event_limit,
            tombstone_ms=_seconds_ms("revoked_ttl", revoked_ttl),
            secret=secret,
            app_state_ms=_seconds_ms("app_state_ttl", app_state_ttl) if app_state_ttl else 0,
            user_state_ms=_seconds_ms("user_state_ttl", user_state_ttl) if user_state_ttl else 0,
            on_get=on_get,
            on_append=on_append,
            tracks=True,
            breaker=self.breaker,
            fail_closed=on_error == "closed",
        )
        self._track_limit = (
            validate.count(track_limit, "track_limit") if track_limit is not None else event_limit
        )
        self._summaries = self._summary_jobs(summarizer, summary_workers, summary_queue, summary_timeout)
        self._summary_every = (
            validate.count(summary_every, "summary_every") if summary_every is not None else None
        )
        if self._summary_every is not None and summarizer is None:
            raise ValueError("summary_every needs a summarizer=")
        if self._summary_every is not None and write_behind:
            raise ValueError("summary_every counts appends as they are written: use it without write_behind")
        self._wb = WriteBehind(write_behind, queue_size)
        queues = AsyncQueues if self._asyncio else SyncQueues  # started by the first queued write
        self._queues: Any = queues(
            lambda: self._ns.client,
            self._wb.workers,
            self._wb.capacity,
            "rp-session-wb",
            "write-behind session write",
        )

    def _summary_jobs(self, summarizer: Any, workers: int, size: int, timeout: float) -> SummaryJobs | None:
        if summarizer is None:
            return None
        validate.callable_or_none(summarizer, "summarizer", "called as summarizer(events, filter_key)")
        return SummaryJobs(
            lambda: self._ns.client,
            self._cfg,
            summarizer,
            validate.count(workers, "summary_workers"),
            validate.count(size, "summary_queue"),
            validate.seconds(timeout, "summary_timeout"),
            asyncio_=self._asyncio,
        )

    @property
    def namespace(self) -> Namespace:
        return self._ns

    @property
    def summary_stats(self) -> SummaryStats:
        """Counters of the summary workers (all zero without a summarizer)."""
        return self._summaries.stats if self._summaries is not None else SummaryStats()

    # -- what the methods of both flavours call before and after running a flow

    def _create(
        self,
        user_id: UserId,
        data: Mapping[str, Any] | None,
        meta: Mapping[str, Any],
        ttl: float | None,
        lifetime: float | None,
    ) -> Flow[str]:
        self._ns.check_write("SessionStore.create")
        return core.create(
            self._cfg, user_id, data, meta,
            idle_ms=_seconds_ms("ttl", ttl) if ttl is not None else None,
            lifetime_ms=_seconds_ms("lifetime", lifetime) if lifetime is not None else None,
        )  # fmt: skip

    def _read(self, what: str) -> core.SessionConfig:
        if self._mode == "write":  # a mount's mode never changes: build the message only to raise
            self._ns.check_read(f"SessionStore.{what}")
        return self._cfg

    def _write(self, what: str) -> core.SessionConfig:
        if self._mode == "read":
            self._ns.check_write(f"SessionStore.{what}")
        return self._cfg

    def _events_args(
        self, token: str, limit: int | None, since: Any, until: Any
    ) -> tuple[core.SessionConfig, str, int | None, int | None, int | None]:
        return (
            self._read("events"),
            token,
            limit,
            tracks.time_us("since", since),
            tracks.time_us("until", until),
        )

    def _track_args(self, since: Any, until: Any) -> tuple[int | None, int | None]:
        return tracks.time_us("since", since), tracks.time_us("until", until)

    def _enqueue(self, token: str, filter_key: str) -> bool:
        tracks.check_filter(filter_key)
        if self._summaries is None:
            raise ValueError("this store has no summarizer: pass SessionStore(summarizer=...)")
        if core.check_token(token) is None:
            return False
        return bool(self._summaries.offer(token, filter_key))

    def _after_append(self, token: str, counted: tuple[int, int]) -> int:
        n, count = counted
        if self._summaries is not None and tracks.due(count, self._summary_every):
            self._summaries.offer(token, "")
        return n

    @staticmethod
    def _version(v: int | None, expect: int | None) -> int | None:
        if v == -1:
            assert expect is not None
            raise SessionConflict(expect)
        return v
