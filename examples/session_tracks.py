"""Session tracks (timelines queried by time and count) and background summaries that never slow appends.

REDIS_URL=redis://localhost:6379/0 python examples/session_tracks.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import redispatterns as rp

URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")


def summarize(events: list[Any], filter_key: str) -> dict[str, Any]:
    """A stand-in for a model call: count the turns (of one role when filter_key names it)."""
    if filter_key == "slow":
        time.sleep(2)  # past the timeout below: abandoned, counted, logged
    turns = [e for e in events if filter_key in ("", "slow") or e["role"] == filter_key]
    return {"turns": len(turns), "last": turns[-1]["text"] if turns else None}


def main() -> None:
    store = rp.SessionStore(
        rp.connect(URL),
        mount=rp.Mount(prefix="example:"),
        summarizer=summarize,
        summary_workers=2,
        summary_queue=10,
        summary_timeout=0.5,
        summary_every=4,
    )
    token = store.create("user:7")
    started = time.perf_counter()
    for i in range(8):
        store.append_event(token, {"role": "user" if i % 2 == 0 else "assistant", "text": f"turn {i}"})
        store.append_track(token, "tool-calls", {"tool": "search", "n": i})
    store.summarize(token, "slow")  # queued: the append path never waits for it
    print(f"8 appends + 8 track events in {(time.perf_counter() - started) * 1000:.1f} ms")

    calls = store.track(token, "tool-calls")
    print("tool calls:", [c.event["n"] for c in calls])
    print("newest 2:", [c.event["n"] for c in store.track(token, "tool-calls", limit=2)])
    since = calls[5].time
    print("since the 6th:", [c.event["n"] for c in store.track(token, "tool-calls", since=since)])

    store.summarize(token, "assistant")
    store.flush()  # wait for the queued jobs (for the demo)
    print("summary:", store.summary(token))
    print("assistant summary:", store.summary(token, "assistant"))
    print("stats:", store.summary_stats)

    new = store.rotate(token)  # tracks and summaries move with the session
    assert new is not None
    print(
        "after rotate:", len(store.track(new, "tool-calls")), "track events;", store.summary(new) is not None
    )
    store.destroy(new)
    print("after logout:", store.track(new, "tool-calls"), store.summary(new))
    store.close()


if __name__ == "__main__":
    main()
