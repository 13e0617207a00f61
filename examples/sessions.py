"""Sliding sessions: create, read (sliding), update fields, events, rotate, log out everywhere.

REDIS_URL=redis://localhost:6379/0 python examples/sessions.py
"""

from __future__ import annotations

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
    print("events:", store.events(phone))

    phone = store.rotate(phone) or ""  # e.g. after a privilege change: the old token is dead
    rotated = store.get(phone)
    print("after rotation:", rotated.data if rotated else None)

    for info in store.sessions("user:42"):
        print(f"  session {info.id[:12]}… from {info.ip} ({info.user_agent}), last seen {info.last_seen:.0f}")

    store.patch_state("user", "user:42", {"locale": "fr"})  # user-wide state, shared by sessions
    print("user state:", store.state("user", "user:42"))

    print("logged out everywhere:", store.destroy_all("user:42"), "sessions")
    print("laptop token now:", store.get(laptop))


if __name__ == "__main__":
    main()
