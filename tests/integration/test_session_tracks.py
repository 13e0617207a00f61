"""Session tracks and summaries (S3) on every backend and flavour: timelines, time ranges, workers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

import redispatterns as rp_pkg
from redispatterns.session import AsyncSessionStore, SessionStore
from redispatterns.testing.plugin import Harness

PREFIX = "t:"


def store(rp: Harness, **opts: Any) -> Any:
    opts.setdefault("mount", rp_pkg.Mount(prefix=PREFIX))
    return rp.pick(SessionStore, AsyncSessionStore)(rp.client, **opts)


def track_key(rp: Harness, st: Any, token: str) -> str:
    s = rp.call(st.get(token))
    return f"{PREFIX}sess:{{{s.id}}}:tr"


def test_tracks_are_timelines_with_time_and_count_queries(rp: Harness) -> None:
    st = store(rp, track_limit=50)
    tok = rp.call(st.create("u1"))
    for i in range(5):
        assert rp.call(st.append_track(tok, "tool-calls", {"i": i})) == i + 1
        rp.call(st.append_track(tok, "errors", f"e{i}"))
    assert rp.call(st.append_track(tok, "tool-callsX", "other")) == 1  # a name that extends another
    calls = rp.call(st.track(tok, "tool-calls"))
    assert [c.event for c in calls] == [{"i": i} for i in range(5)]
    times = [c.time for c in calls]
    assert times == sorted(times) and abs(times[0] - time.time()) < 60
    assert [e.event for e in rp.call(st.track(tok, "errors"))] == [f"e{i}" for i in range(5)]
    assert [e.event for e in rp.call(st.track(tok, "tool-calls", limit=2))] == [{"i": 3}, {"i": 4}]
    # time ranges are inclusive at both ends
    mid = rp.call(st.track(tok, "tool-calls", since=times[1], until=times[3]))
    assert [m.event["i"] for m in mid] == [1, 2, 3]
    assert [m.event["i"] for m in rp.call(st.track(tok, "tool-calls", since=times[3]))] == [3, 4]
    assert [m.event["i"] for m in rp.call(st.track(tok, "tool-calls", until=times[0]))] == [0]
    newest_in_range = rp.call(st.track(tok, "tool-calls", since=times[0], until=times[3], limit=2))
    assert [m.event["i"] for m in newest_in_range] == [2, 3]
    as_dt = datetime.fromtimestamp(times[4], tz=timezone.utc)
    assert [m.event["i"] for m in rp.call(st.track(tok, "tool-calls", since=as_dt))] == [4]
    assert rp.call(st.track(tok, "missing")) == []
    assert rp.call(st.track("not-a-token", "tool-calls")) == []
    assert rp.call(st.append_track("x" * 43, "tool-calls", 1)) == 0  # no such session


def test_tracks_are_trimmed_and_checked(rp: Harness) -> None:
    st = store(rp, track_limit=3)
    tok = rp.call(st.create("u1"))
    for i in range(7):
        assert rp.call(st.append_track(tok, "t", i)) == min(i + 1, 3)
    assert [e.event for e in rp.call(st.track(tok, "t"))] == [4, 5, 6]
    for bad in ("", "a\x00b", "x" * 201):
        with pytest.raises(ValueError):
            rp.call(st.append_track(tok, bad, 1))
    with pytest.raises(TypeError):
        rp.call(st.track(tok, 5))
    with pytest.raises(ValueError):
        rp.call(st.track(tok, "t", limit=0))
    with pytest.raises(ValueError):
        rp.call(st.track(tok, "t", since=2.0, until=1.0))
    with pytest.raises(ValueError, match="aware"):
        rp.call(st.track(tok, "t", since=datetime(2026, 1, 1)))
    with pytest.raises(TypeError):
        rp.call(st.track(tok, "t", since="yesterday"))
    with pytest.raises(TypeError):
        rp.call(st.append_track(tok, "t", object()))


def test_tracks_follow_the_session_lifecycle(rp: Harness) -> None:
    st = store(rp, lifetime=60)
    c = rp.sync_client
    tok = rp.call(st.create("u1"))
    rp.call(st.append_track(tok, "t", "a"))
    key = track_key(rp, st, tok)
    assert 0 < c.pttl(key) <= 60_000  # expires at the session's absolute deadline
    new = rp.call(st.rotate(tok))
    assert [e.event for e in rp.call(st.track(new, "t"))] == ["a"]  # moved with the session
    assert rp.call(st.track(tok, "t")) == [] and c.exists(key) == 0
    new_key = track_key(rp, st, new)
    assert 0 < c.pttl(new_key) <= 60_000
    rp.call(st.append_track(new, "t", "b"))
    assert rp.call(st.destroy(new)) is True
    assert c.exists(new_key) == 0  # logout deletes the tracks
    assert rp.call(st.append_track(new, "t", "late")) == 0
    t2 = rp.call(st.create("u2"))
    t3 = rp.call(st.create("u2"))
    rp.call(st.append_track(t2, "t", 1))
    rp.call(st.append_track(t3, "t", 1))
    keys = [track_key(rp, st, t2), track_key(rp, st, t3)]
    assert rp.call(st.destroy_all("u2")) == 2
    assert c.exists(*keys[:1]) == 0 and c.exists(keys[1]) == 0


def test_summaries_every_n_events_and_on_demand(rp: Harness) -> None:
    seen: list[tuple[int, str]] = []

    def summarizer(events: list[Any], filter_key: str) -> dict[str, Any]:
        seen.append((len(events), filter_key))
        chosen = [e for e in events if not filter_key or e.get("kind") == filter_key]
        return {"n": len(chosen), "last": chosen[-1]["i"] if chosen else None}

    st = store(rp, summarizer=summarizer, summary_workers=1, summary_every=3)
    tok = rp.call(st.create("u1"))
    for i in range(6):
        assert rp.call(st.append_event(tok, {"i": i, "kind": "err" if i % 2 else "ok"})) == i + 1
    rp.call(st.flush())
    s = rp.call(st.summary(tok))
    assert s is not None and s.value == {"n": 6, "last": 5} and s.events == 6  # jobs at 3 and 6
    assert abs(s.created - time.time()) < 60
    # a job reads the log when it runs: the first one saw 3 events, or more if it ran late
    assert len(seen) == 2 and 3 <= seen[0][0] <= 6 and seen[1] == (6, "")
    assert rp.call(st.append_event(tok, {"i": 6, "kind": "ok"})) == 7  # 7: no job
    rp.call(st.flush())
    assert len(seen) == 2 and rp.call(st.summary(tok)) == s
    assert rp.call(st.summary(tok, "err")) is None
    assert rp.call(st.summarize(tok, "err")) is True
    rp.call(st.flush())
    err = rp.call(st.summary(tok, "err"))
    assert err is not None and err.value == {"n": 3, "last": 5} and err.events == 7
    stats = st.summary_stats
    assert stats.enqueued == 3 and stats.completed == 3
    assert stats.failed == stats.timed_out == stats.dropped == 0
    # summaries rotate, and die, with the session
    new = rp.call(st.rotate(tok))
    assert rp.call(st.summary(new, "err")) == err
    assert rp.call(st.summary(tok, "err")) is None
    rp.call(st.destroy(new))
    assert rp.call(st.summary(new)) is None
    assert rp.call(st.summarize(new)) is True  # enqueued; the job finds no session
    rp.call(st.flush())
    assert st.summary_stats.skipped == 1
    assert rp.call(st.summarize("not-a-token")) is False
    rp.call(st.close())


def test_a_stuck_summarizer_never_blocks_or_fails_appends(
    rp: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()

    def stuck(events: list[Any], filter_key: str) -> str:
        release.wait(10)
        return "late"

    st = store(rp, summarizer=stuck, summary_workers=1, summary_queue=1, summary_timeout=0.3, summary_every=1)
    tok = rp.call(st.create("u1"))
    caplog.set_level(logging.WARNING, logger="redispatterns.session")
    for i in range(20):  # job 1 runs (stuck), job 2 waits in the queue, the rest are dropped
        assert rp.call(st.append_event(tok, i)) == min(i + 1, 100)
    assert not release.is_set()  # every append returned while the summarizer was still stuck
    rp.call(st.flush())
    stats = st.summary_stats
    assert stats.timed_out >= 1 and stats.dropped >= 1
    assert stats.enqueued + stats.dropped == 20
    assert stats.timed_out + stats.completed + stats.skipped == stats.enqueued
    assert "timed out" in caplog.text and "queue is full" in caplog.text
    assert rp.call(st.summary(tok)) is None or rp.call(st.summary(tok)).value == "late"
    release.set()

    def broken(events: list[Any], filter_key: str) -> str:
        raise RuntimeError("model unavailable")

    st2 = store(rp, summarizer=broken, summary_every=2)
    tok2 = rp.call(st2.create("u2"))
    for i in range(4):
        rp.call(st2.append_event(tok2, i))
    rp.call(st2.flush())
    assert st2.summary_stats.failed == 2 and rp.call(st2.summary(tok2)) is None
    assert "model unavailable" in caplog.text
    rp.call(st.close())
    rp.call(st2.close())


def test_async_summarizer_is_cancelled_at_the_timeout(backend: Any) -> None:
    from redispatterns.testing.plugin import Harness as H

    h = H(backend, "async")
    try:
        calls: list[int] = []

        async def slow(events: list[Any], filter_key: str) -> str:
            calls.append(len(events))
            await asyncio.sleep(0.05 if len(events) == 1 else 5)
            return f"{len(events)} events"

        st = store(h, summarizer=slow, summary_timeout=0.5, summary_every=1)
        tok = h.call(st.create("u1"))
        h.call(st.append_event(tok, "a"))
        h.call(st.flush())
        first = h.call(st.summary(tok))
        assert first is not None and first.value == "1 events"
        started = time.monotonic()
        h.call(st.append_event(tok, "b"))
        h.call(st.flush())
        assert time.monotonic() - started < 3  # cancelled at 0.5 s, not after 5 s
        assert st.summary_stats.timed_out == 1 and h.call(st.summary(tok)).value == "1 events"
        h.call(st.close())
    finally:
        h.close()


def test_summary_options_are_checked(rp: Harness) -> None:
    with pytest.raises(ValueError, match="needs a summarizer"):
        store(rp, summary_every=3)
    with pytest.raises(TypeError):
        store(rp, summarizer="gpt")
    with pytest.raises(ValueError):
        store(rp, summarizer=lambda e, k: 1, summary_workers=0)
    with pytest.raises(ValueError):
        store(rp, summarizer=lambda e, k: 1, summary_timeout=0)
    with pytest.raises(ValueError, match="write_behind"):
        store(rp, summarizer=lambda e, k: 1, summary_every=2, write_behind=2)
    with pytest.raises(ValueError):
        store(rp, track_limit=0)
    st = store(rp)
    with pytest.raises(ValueError, match="no summarizer"):
        rp.call(st.summarize("x" * 43))
    assert st.summary_stats == rp_pkg.SummaryStats()
    if not rp.is_async:

        async def coro(events: list[Any], filter_key: str) -> str:
            return ""

        with pytest.raises(TypeError, match="AsyncSessionStore"):
            store(rp, summarizer=coro)


def test_a_late_job_never_overwrites_a_fresher_summary(rp: Harness) -> None:
    def summarizer(events: list[Any], filter_key: str) -> int:
        if len(events) == 1:
            time.sleep(0.4)  # the first job finishes last
        return len(events)

    st = store(rp, summarizer=summarizer, summary_workers=2, summary_every=1)
    tok = rp.call(st.create("u1"))
    rp.call(st.append_event(tok, "a"))
    time.sleep(0.1)  # the first job has read its one event
    rp.call(st.append_event(tok, "b"))
    rp.call(st.flush())
    s = rp.call(st.summary(tok))
    assert s is not None and s.value == 2 and s.events == 2
    stats = st.summary_stats
    assert stats.completed + stats.skipped == 2 and stats.enqueued == 2
    rp.call(st.close())
