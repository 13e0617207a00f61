"""Tour: locks that own their token, fencing tokens, waiting without polling, auto-renewal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ORDER = 40
TITLE = "Locks: fencing tokens, lease loss you hear about, waiting without polling"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.errors import LockLost, LockNotOwned
    from redispatterns.lock import Lock

    client = rp.connect(url)
    mount = rp.Mount(prefix="demo:")
    lock = Lock("invoice:7", ttl=0.2, mount=mount, client=client)
    a = lock.acquire()
    say(f"A holds {lock.keys.lock!r} with fencing token {a.fence}; its handle owns a random token.")
    time.sleep(0.3)
    b = lock.acquire(blocking=False)
    assert b is not None
    say(f"A paused past its 0.2 s lease; B took the lock with fence {b.fence} (> {a.fence}).")
    b.fenced_set("ledger", "written by B")
    try:
        a.release()
    except LockNotOwned as exc:
        say(f"A's release is refused, B's lock is untouched: {exc}")
    try:
        a.fenced_set("ledger", "written by A")
    except LockLost:
        say(f"A's stale write is refused by the fence check; ledger = {lock.fenced_get('ledger')!r}")
    b.release()

    slow = Lock("report", ttl=5, mount=mount, client=client)
    holder = slow.acquire()
    woke: list[float] = []

    def waiter() -> None:
        with slow.acquire(timeout=5):
            woke.append(time.monotonic())

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    released = time.monotonic()
    holder.release()
    t.join()
    say(
        f"a waiter blocked on the release signal (no polling) and got the lock "
        f"{(woke[0] - released) * 1000:.1f} ms after the release, not after the 5 s lease."
    )

    renewed = Lock("long-job", ttl=0.3, mount=mount, client=client, auto_renew=True)
    with renewed.acquire() as held:
        time.sleep(0.8)
        say(f"auto-renew kept a 0.3 s lease through 0.8 s of work (lost: {held.lost}).")
