"""User code around sessions that must type-check under ``mypy --strict`` with no ignores."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from typing_extensions import assert_type

import redispatterns as rp


def log_in(store: rp.SessionStore, user: int) -> str | None:
    token = store.create(user, {"cart": []}, ip="10.0.0.1")  # an int user id: stored as its str
    assert_type(token, str)
    session = store.get(token)
    assert_type(session, rp.Session | None)
    if session is None:
        return None
    assert_type(session.user_id, str)
    assert_type(store.update(token, {"cart": [1]}, expect_version=session.version), int | None)
    since = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert_type(store.events(token, 10, since=since, until=1.8e9), list[Any])
    assert_type(store.sessions(uuid.uuid4()), list[rp.SessionInfo])
    return store.rotate(token)


async def log_in_async(store: rp.AsyncSessionStore) -> None:
    token = await store.create(uuid.uuid4())
    assert_type(await store.get(token), rp.Session | None)
    assert_type(await store.track(token, "clicks", since=0, limit=5), list[rp.TrackEvent])
    assert_type(await store.destroy_all("user:1"), int)


def stores() -> tuple[rp.SessionStore, rp.AsyncSessionStore]:
    closed = rp.SessionStore(on_error="closed", breaker=rp.CircuitBreaker(threshold=3, reset_after=2.0))
    assert_type(closed.breaker, rp.CircuitBreaker)
    with rp.SessionStore(write_behind=2) as buffered:
        assert_type(buffered, rp.SessionStore)
    return closed, rp.AsyncSessionStore(ttl=600)
