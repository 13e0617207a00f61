"""Sliding sessions: ``SessionStore`` and ``AsyncSessionStore``.

>>> store = SessionStore(ttl=1800, lifetime=12 * 3600)      # doctest: +SKIP
>>> token = store.create("user:7", {"cart": []}, ip="10.0.0.1")
>>> store.get(token).data                                   # one round trip; slides the idle TTL
{'cart': []}

Redis holds only a hash of each token. See the README's "Sessions" section and ``_core/session.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._core import session as core
from ._core import session_tracks as tracks
from ._core.ops import Flow
from ._core.session import Session, SessionInfo, UserId
from ._core.session_tracks import SessionSummary, TrackEvent
from ._core.writebehind import prime
from ._runner import run_async, run_sync
from ._session_base import StoreBase
from ._session_summary import SummaryStats
from .errors import SessionConflict

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


class SessionStore(StoreBase):
    """Sliding sessions (sync). Every method has the same-named coroutine on the async twin."""

    def _run(self, flow: Flow[Any]) -> Any:
        return run_sync(self._ns.client, flow)

    def create(
        self,
        user_id: UserId,
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
        return run_sync(self._ns.client, core.get(self._read("get"), token))

    def update(
        self,
        token: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int | None:
        """Set ``changes`` and delete ``remove`` atomically; the new version, ``None`` when no session."""
        flow = core.update(self._write("update"), token, changes, remove, expect_version)
        v = run_sync(self._ns.client, flow)
        return self._version(v, expect_version)

    def destroy(self, token: str) -> bool:
        """Log this token out; an in-flight request can't bring it back."""
        return self._run(core.destroy(self._write("destroy"), token))  # type: ignore[no-any-return]

    def revoke(self, user_id: UserId, session_id: str) -> bool:
        """Log out one of ``user_id``'s sessions by its id (``SessionInfo.id``)."""
        user = core.check_user(user_id)
        return self._run(core.destroy_id(self._write("revoke"), str(session_id), user))  # type: ignore[no-any-return]

    def destroy_all(self, user_id: UserId) -> int:
        """Log ``user_id`` out everywhere; the number of sessions revoked."""
        return self._run(core.destroy_all(self._write("destroy_all"), user_id))  # type: ignore[no-any-return]

    def sessions(self, user_id: UserId) -> list[SessionInfo]:
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

    def events(
        self, token: str, limit: int | None = None, *, since: Any = None, until: Any = None
    ) -> list[Any]:
        """The newest ``limit`` events (default: all kept) appended in ``[since, until]`` (epoch
        seconds or aware datetimes, server time), oldest first."""
        return self._run(core.events(*self._events_args(token, limit, since, until)))  # type: ignore[no-any-return]

    def patch_state(
        self,
        scope: str,
        name: UserId,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
    ) -> int | None:
        """Merge into ``"app"`` or ``"user"`` state: fields held (``None``: queued)."""
        return self._submit(
            f"{scope}\0{name}", core.patch_state(self._write("patch_state"), scope, name, changes, remove)
        )

    def state(self, scope: str, name: UserId) -> dict[str, Any]:
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


class AsyncSessionStore(StoreBase):
    """Sliding sessions (asyncio): the methods of :class:`SessionStore`, as coroutines."""

    _asyncio = True

    async def _run(self, flow: Flow[Any]) -> Any:
        return await run_async(self._ns.client, flow)

    async def create(
        self,
        user_id: UserId,
        data: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        lifetime: float | None = None,
        **meta: Any,
    ) -> str:
        return await self._run(self._create(user_id, data, meta, ttl, lifetime))  # type: ignore[no-any-return]

    async def get(self, token: str) -> Session | None:
        return await run_async(self._ns.client, core.get(self._read("get"), token))

    async def update(
        self,
        token: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
        expect_version: int | None = None,
    ) -> int | None:
        flow = core.update(self._write("update"), token, changes, remove, expect_version)
        v = await run_async(self._ns.client, flow)
        return self._version(v, expect_version)

    async def destroy(self, token: str) -> bool:
        return await self._run(core.destroy(self._write("destroy"), token))  # type: ignore[no-any-return]

    async def revoke(self, user_id: UserId, session_id: str) -> bool:
        user = core.check_user(user_id)
        return await self._run(core.destroy_id(self._write("revoke"), str(session_id), user))  # type: ignore[no-any-return]

    async def destroy_all(self, user_id: UserId) -> int:
        return await self._run(core.destroy_all(self._write("destroy_all"), user_id))  # type: ignore[no-any-return]

    async def sessions(self, user_id: UserId) -> list[SessionInfo]:
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

    async def events(
        self, token: str, limit: int | None = None, *, since: Any = None, until: Any = None
    ) -> list[Any]:
        return await self._run(core.events(*self._events_args(token, limit, since, until)))  # type: ignore[no-any-return]

    async def patch_state(
        self,
        scope: str,
        name: UserId,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Iterable[str] = (),
    ) -> int | None:
        flow = core.patch_state(self._write("patch_state"), scope, name, changes, remove)
        return await self._submit(f"{scope}\0{name}", flow)

    async def state(self, scope: str, name: UserId) -> dict[str, Any]:
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
