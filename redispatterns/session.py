"""Sliding sessions: ``SessionStore`` and ``AsyncSessionStore``.

>>> store = SessionStore(ttl=1800, lifetime=12 * 3600)      # doctest: +SKIP
>>> token = store.create("user:7", {"cart": []}, ip="10.0.0.1")
>>> store.get(token).data                                   # one round trip; slides the idle TTL
{'cart': []}

Redis holds only a hash of each token. See the README's "Sessions" section and ``_core/session.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ._core import session as core
from ._core import session_tracks as tracks
from ._core import validate
from ._core.ops import Flow
from ._core.session import Session, SessionInfo
from ._core.session_tracks import SessionSummary, TrackEvent
from ._core.writebehind import WriteBehind, prime
from ._runner import AsyncQueues, SyncQueues, run_async, run_sync
from ._session_summary import SummaryJobs, SummaryStats
from .errors import SessionConflict
from .mount import Mount, Namespace, resolve

__all__ = [
    "AsyncSessionStore",
    "Session",
    "SessionConflict",
    "SessionInfo",
    "SessionStore",
    "SessionSummary",
    "SummaryStats",
    "TrackEvent",
]

log = logging.getLogger("redispatterns.session")

GetHook = Callable[[Session], "Session | Awaitable[Session | None] | None"]
AppendHook = Callable[[str, Any], Any]


def _seconds_ms(name: str, value: object) -> int:
    return max(1, round(validate.seconds(value, name) * 1000))


def _summaries(store: _Base, summarizer: Any, workers: int, size: int, timeout: float) -> SummaryJobs | None:
    if summarizer is None:
        return None
    validate.callable_or_none(summarizer, "summarizer", "called as summarizer(events, filter_key)")
    return SummaryJobs(
        lambda: store._ns.client,
        store._cfg,
        summarizer,
        validate.count(workers, "summary_workers"),
        validate.count(size, "summary_queue"),
        validate.seconds(timeout, "summary_timeout"),
        asyncio_=store._asyncio,
    )


class _Base:
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
    ) -> None:
        """``ttl``: idle seconds (default: the mount's TTL, else 1800); ``lifetime``: absolute
        seconds that sliding never extends; ``refresh_below``: slide only when less than this
        fraction of the idle TTL is left (1.0: every read); ``secret``: HMAC key for token ids;
        ``write_behind``: N workers that persist events and state patches in the background.
        ``track_limit``: events kept per track (default ``event_limit``). ``summarizer(events,
        filter_key)``: run by ``summary_workers`` from a queue of ``summary_queue`` jobs with
        ``summary_timeout`` seconds each, on demand (``summarize``) and every ``summary_every``
        appended events."""
        self._ns = resolve(mount, client, asyncio=self._asyncio)
        idle = ttl if ttl is not None else (self._ns.ttl or core.DEFAULT_IDLE)
        refresh_below = validate.fraction(refresh_below, "refresh_below", zero_ok=False)
        validate.count(event_limit, "event_limit")
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and (not isinstance(secret, bytes) or len(secret) < 16):
            raise ValueError("secret must be at least 16 bytes")
        validate.callable_or_none(on_get, "on_get", "taking the session")
        validate.callable_or_none(on_append, "on_append", "taking (session_id, event)")
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
        )
        self._track_limit = (
            validate.count(track_limit, "track_limit") if track_limit is not None else event_limit
        )
        self._summaries = _summaries(self, summarizer, summary_workers, summary_queue, summary_timeout)
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

    @property
    def namespace(self) -> Namespace:
        return self._ns

    def _create(
        self,
        user_id: str,
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
        self._ns.check_read(f"SessionStore.{what}")
        return self._cfg

    def _write(self, what: str) -> core.SessionConfig:
        self._ns.check_write(f"SessionStore.{what}")
        return self._cfg

    @property
    def summary_stats(self) -> SummaryStats:
        """Counters of the summary workers (all zero without a summarizer)."""
        return self._summaries.stats if self._summaries is not None else SummaryStats()

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


class SessionStore(_Base):
    """Sliding sessions (sync). Every method has the same-named coroutine on the async twin."""

    def _run(self, flow: Flow[Any]) -> Any:
        return run_sync(self._ns.client, flow)

    def create(
        self,
        user_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        lifetime: float | None = None,
        **meta: Any,
    ) -> str:
        """A new session for ``user_id``; returns its token (the only copy: Redis keeps a hash).
        ``meta`` (e.g. ``ip=``, ``user_agent=``) is listed by ``sessions()``."""
        return self._run(self._create(user_id, data, meta, ttl, lifetime))  # type: ignore[no-any-return]

    def get(self, token: str) -> Session | None:
        """The live session, or ``None``; one round trip that also slides the idle TTL."""
        return self._run(core.get(self._read("get"), token))  # type: ignore[no-any-return]

    def update(
        self,
        token: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int | None:
        """Set ``changes`` and delete ``remove`` atomically; the new version, ``None`` when no session."""
        v = self._run(core.update(self._write("update"), token, changes, remove, expect_version))
        return self._version(v, expect_version)

    def destroy(self, token: str) -> bool:
        """Log this token out; an in-flight request can't bring it back."""
        return self._run(core.destroy(self._write("destroy"), token))  # type: ignore[no-any-return]

    def revoke(self, user_id: str, session_id: str) -> bool:
        """Log out one of ``user_id``'s sessions by its id (``SessionInfo.id``)."""
        core.check_user(user_id)
        return self._run(core.destroy_id(self._write("revoke"), str(session_id), user_id))  # type: ignore[no-any-return]

    def destroy_all(self, user_id: str) -> int:
        """Log ``user_id`` out everywhere; the number of sessions revoked."""
        return self._run(core.destroy_all(self._write("destroy_all"), user_id))  # type: ignore[no-any-return]

    def sessions(self, user_id: str) -> list[SessionInfo]:
        """``user_id``'s live sessions, oldest first (stale index entries are removed)."""
        return self._run(core.sessions(self._read("sessions"), user_id))  # type: ignore[no-any-return]

    def rotate(self, token: str) -> str | None:
        """A new token for the same session; the old token is dead. ``None`` when no session."""
        return self._run(core.rotate(self._write("rotate"), token))  # type: ignore[no-any-return]

    def append_event(self, token: str, event: Any) -> int | None:
        """Append to the session's capped log: events kept (0: no session; ``None``: queued)."""
        if self._summary_every is not None:
            return self._after_append(
                token, self._run(tracks.append_counted(self._write("append_event"), token, event))
            )
        return self._submit(token, core.append_event(self._write("append_event"), token, event))

    def append_track(self, token: str, track: str, event: Any) -> int:
        """Append ``event`` to the session's track (a timeline): events kept in it (0: no session)."""
        flow = tracks.append_track(self._write("append_track"), token, track, event, self._track_limit)
        return self._run(flow)  # type: ignore[no-any-return]

    def track(
        self, token: str, track: str, *, since: Any = None, until: Any = None, limit: int | None = None
    ) -> list[TrackEvent]:
        """The track's events appended in ``[since, until]`` (epoch seconds or aware datetimes),
        oldest first; with ``limit``, the newest ``limit`` of them."""
        flow = tracks.track(self._read("track"), token, track, *self._track_args(since, until), limit)
        return self._run(flow)  # type: ignore[no-any-return]

    def summarize(self, token: str, filter_key: str = "") -> bool:
        """Queue a summary job for the session (never waits): False when the queue is full."""
        return self._enqueue(token, filter_key)

    def summary(self, token: str, filter_key: str = "") -> SessionSummary | None:
        """The session's stored summary for ``filter_key``, or ``None``."""
        return self._run(tracks.summary(self._read("summary"), token, filter_key))  # type: ignore[no-any-return]

    def events(self, token: str, limit: int | None = None) -> list[Any]:
        """The newest ``limit`` events, oldest first."""
        return self._run(core.events(self._read("events"), token, limit))  # type: ignore[no-any-return]

    def patch_state(
        self, scope: str, name: str, changes: Mapping[str, Any] | None = None, *, remove: Iterable[str] = ()
    ) -> int | None:
        """Merge into ``"app"`` or ``"user"`` state: fields held (``None``: queued)."""
        return self._submit(
            f"{scope}\0{name}", core.patch_state(self._write("patch_state"), scope, name, changes, remove)
        )

    def state(self, scope: str, name: str) -> dict[str, Any]:
        """The ``"app"`` or ``"user"`` state hash."""
        return self._run(core.state(self._read("state"), scope, name))  # type: ignore[no-any-return]

    # ------------------------------------------------------------ write-behind

    def _submit(self, order_key: object, flow: Flow[int]) -> int | None:
        if not self._wb.enabled:
            return self._run(flow)  # type: ignore[no-any-return]
        primed = prime(flow)  # argument errors raise here, in the caller
        if primed is not None:
            self._queues.submit(self._wb.shard(str(order_key)), primed)
        return None

    def flush(self) -> None:
        """Wait until every queued write (and summary job) has reached Redis."""
        self._queues.flush()
        if self._summaries is not None:
            self._summaries.queues.flush()

    def close(self) -> None:
        """Flush, then stop the write-behind (and summary) workers."""
        self._queues.close()
        if self._summaries is not None:
            self._summaries.queues.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSessionStore(_Base):
    """Sliding sessions (asyncio): the methods of :class:`SessionStore`, as coroutines."""

    _asyncio = True

    async def _run(self, flow: Flow[Any]) -> Any:
        return await run_async(self._ns.client, flow)

    async def create(
        self,
        user_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        lifetime: float | None = None,
        **meta: Any,
    ) -> str:
        return await self._run(self._create(user_id, data, meta, ttl, lifetime))  # type: ignore[no-any-return]

    async def get(self, token: str) -> Session | None:
        return await self._run(core.get(self._read("get"), token))  # type: ignore[no-any-return]

    async def update(
        self,
        token: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int | None:
        v = await self._run(core.update(self._write("update"), token, changes, remove, expect_version))
        return self._version(v, expect_version)

    async def destroy(self, token: str) -> bool:
        return await self._run(core.destroy(self._write("destroy"), token))  # type: ignore[no-any-return]

    async def revoke(self, user_id: str, session_id: str) -> bool:
        core.check_user(user_id)
        return await self._run(core.destroy_id(self._write("revoke"), str(session_id), user_id))  # type: ignore[no-any-return]

    async def destroy_all(self, user_id: str) -> int:
        return await self._run(core.destroy_all(self._write("destroy_all"), user_id))  # type: ignore[no-any-return]

    async def sessions(self, user_id: str) -> list[SessionInfo]:
        return await self._run(core.sessions(self._read("sessions"), user_id))  # type: ignore[no-any-return]

    async def rotate(self, token: str) -> str | None:
        return await self._run(core.rotate(self._write("rotate"), token))  # type: ignore[no-any-return]

    async def append_event(self, token: str, event: Any) -> int | None:
        if self._summary_every is not None:
            flow = tracks.append_counted(self._write("append_event"), token, event)
            return self._after_append(token, await self._run(flow))
        return await self._submit(token, core.append_event(self._write("append_event"), token, event))

    async def append_track(self, token: str, track: str, event: Any) -> int:
        flow = tracks.append_track(self._write("append_track"), token, track, event, self._track_limit)
        return await self._run(flow)  # type: ignore[no-any-return]

    async def track(
        self, token: str, track: str, *, since: Any = None, until: Any = None, limit: int | None = None
    ) -> list[TrackEvent]:
        flow = tracks.track(self._read("track"), token, track, *self._track_args(since, until), limit)
        return await self._run(flow)  # type: ignore[no-any-return]

    async def summarize(self, token: str, filter_key: str = "") -> bool:
        return self._enqueue(token, filter_key)

    async def summary(self, token: str, filter_key: str = "") -> SessionSummary | None:
        return await self._run(tracks.summary(self._read("summary"), token, filter_key))  # type: ignore[no-any-return]

    async def events(self, token: str, limit: int | None = None) -> list[Any]:
        return await self._run(core.events(self._read("events"), token, limit))  # type: ignore[no-any-return]

    async def patch_state(
        self, scope: str, name: str, changes: Mapping[str, Any] | None = None, *, remove: Iterable[str] = ()
    ) -> int | None:
        flow = core.patch_state(self._write("patch_state"), scope, name, changes, remove)
        return await self._submit(f"{scope}\0{name}", flow)

    async def state(self, scope: str, name: str) -> dict[str, Any]:
        return await self._run(core.state(self._read("state"), scope, name))  # type: ignore[no-any-return]

    # ------------------------------------------------------------ write-behind

    async def _submit(self, order_key: object, flow: Flow[int]) -> int | None:
        if not self._wb.enabled:
            return await self._run(flow)  # type: ignore[no-any-return]
        primed = prime(flow)
        if primed is not None:
            await self._queues.submit(self._wb.shard(str(order_key)), primed)
        return None

    async def flush(self) -> None:
        await self._queues.flush()
        if self._summaries is not None:
            await self._summaries.queues.flush()

    async def close(self) -> None:
        await self._queues.close()
        if self._summaries is not None:
            await self._summaries.queues.close()

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
