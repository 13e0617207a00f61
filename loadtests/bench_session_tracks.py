"""Session tracks and summaries: what they cost an append, with a summarizer that never returns in time.

* ``append_event`` on a store whose summarizer sleeps past its timeout (a job every append) vs
  the same append on a store without a summarizer: the append never waits for the workers;
  what it pays is the counter (one MULTI of two scripts instead of one EVALSHA) and a
  ``put_nowait``.
* ``append_track`` vs a hand-written ``ZADD`` of the same member; ``track`` (a time range, newest
  50) vs the raw ``ZREVRANGEBYLEX``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import redis

from loadtests.harness import BenchCase, main
from redispatterns.client import connect
from redispatterns.mount import Mount
from redispatterns.session import SessionStore

MOUNT = Mount(prefix="bench:tr:")
EVENT = {"type": "click", "x": 10}
_stop = threading.Event()
_stores: list[SessionStore] = []


def stuck(events: list[Any], filter_key: str) -> str:
    _stop.wait(30)  # far past the timeout: every job times out
    return "late"


def cases(url: str) -> list[BenchCase]:
    c = connect(url)
    plain = SessionStore(c, mount=MOUNT)
    slow = SessionStore(c, mount=MOUNT, summarizer=stuck, summary_workers=2, summary_queue=10,
                        summary_timeout=0.05, summary_every=1)  # fmt: skip
    _stores.extend((plain, slow))
    tok_plain, tok_slow = plain.create("u1"), slow.create("u2")
    tracked = plain.create("u3")
    for i in range(200):
        plain.append_track(tracked, "calls", {"i": i})
    raw = redis.Redis.from_url(url)
    sid = plain._cfg.id_of(tracked)
    tr = plain._cfg.track_key(sid)
    since = time.time() - 3600
    lo = b"[calls\x00" + b"%016d" % int(since * 1_000_000)
    seq = iter(range(10**9))

    def recent() -> Any:
        return plain.track(tracked, "calls", since=since, limit=50)

    def raw_recent() -> Any:
        rows: Any = raw.zrevrangebylex(tr, b"(calls\x01", lo, 0, 50)
        return [orjson.loads(m.split(b"\x00", 3)[3]) for m in reversed(rows)]

    def raw_zadd() -> Any:
        n = next(seq)
        return raw.zadd(tr + "raw", {b"calls\x00%016d\x00%012d\x00{}" % (n, n): 0})

    return [
        BenchCase("session", "append_event, stuck summarizer (timeout 50 ms)",
                  lambda: slow.append_event(tok_slow, EVENT), lambda: plain.append_event(tok_plain, EVENT),
                  note="floor: the same append without a summarizer"),
        BenchCase("session", "append_track", lambda: plain.append_track(tracked, "calls", EVENT), raw_zadd,
                  note="1 script (liveness, trim, expiry) vs ZADD"),
        BenchCase("session", "track(since=, limit=50)", recent, raw_recent,
                  note="MULTI EXISTS + ZREVRANGEBYLEX vs ZREVRANGEBYLEX, both decoding 50 events"),
    ]  # fmt: skip


def teardown() -> None:
    _stop.set()
    for s in _stores:
        s.close()
    print("summary stats of the stuck store:", _stores[1].summary_stats)


if __name__ == "__main__":
    import sys

    sys.exit(main([sys.modules[__name__]]))
