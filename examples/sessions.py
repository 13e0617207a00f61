"""Sliding sessions: create, read (sliding), update fields, events, rotate, log out everywhere,
and what reads do while Redis is unreachable.

REDIS_URL=redis://localhost:6379/0 python examples/sessions.py
"""

from __future__ import annotations

import time

import redispatterns as rp
from redispatterns.session import SessionStore


def main() -> None:
    store = SessionStore(mount=rp.Mount(prefix="example:"), ttl=1800, lifetime=12 * 3600, event_limit=50)

    # log in twice (two devices); the tokens go in cookies, Redis keeps only their SHA-256
    phone = store.create("user:42", {"cart": []}, ip="10.0.0.7", user_agent="phone")
    laptop = store.create("user:42", {"cart": ["book"]}, ip="10.0.0.9", user_agent="laptop")

    session = store.get(phone)  # one round trip; slides the idle TTL, never past the 12 h cap
    assert session is not None
    print(f"user {session.user_id}: data {session.data}, expires at the latest at {session.expires_at:.0f}")

    store.update(phone, {"cart": ["pen"], "theme": "dark"})  # only these fields are written
    store.append_event(phone, {"type": "view", "page": "/checkout"})
    store.append_event(phone, {"type": "click", "target": "#pay"})
    print("events:", store.events(phone))
    print("the newest one:", store.events(phone, 1))
    an_hour_ago = time.time() - 3600  # event times are the server's clock
    print("appended in the last hour:", len(store.events(phone, since=an_hour_ago)))

    phone = store.rotate(phone) or ""  # e.g. after a privilege change: the old token is dead
    rotated = store.get(phone)
    print("after rotation:", rotated.data if rotated else None)

    for info in store.sessions("user:42"):
        print(f"  session {info.id[:12]}… from {info.ip} ({info.user_agent}), last seen {info.last_seen:.0f}")

    store.patch_state("user", "user:42", {"locale": "fr"})  # user-wide state, shared by sessions
    print("user state:", store.state("user", "user:42"))

    print("logged out everywhere:", store.destroy_all("user:42"), "sessions")
    print("laptop token now:", store.get(laptop))

    # a database key works as a user id (stored as its str: 42 and "42" are the same user)
    token = store.create(42, {"cart": []})
    by_int = store.get(token)
    print("user id of an int user:", repr(by_int.user_id if by_int else None))
    store.destroy_all(42)

    # reads behind a circuit breaker: while Redis is unreachable, a read costs one timeout until
    # a few of them open the breaker; then reads skip Redis. on_error="closed": they find nothing
    # (the visitor looks logged out) instead of raising ServerUnavailable.
    nowhere = rp.connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.05)
    offline = SessionStore(nowhere, on_error="closed")
    print("reads while down:", [offline.get(token) for _ in range(6)], "breaker:", offline.breaker.state)


if __name__ == "__main__":
    main()
