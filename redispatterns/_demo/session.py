"""Tour: sliding sessions with an absolute cap, hashed tokens, rotation and logout everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable

ORDER = 20
TITLE = "Sliding sessions"


def tour(url: str, say: Callable[[str], None]) -> None:
    import redispatterns as rp
    from redispatterns.session import SessionStore

    client = rp.connect(url)
    store = SessionStore(client, mount=rp.Mount(prefix="demo:"), ttl=0.6, lifetime=1.5)
    token = store.create("ada", {"cart": ["tea"]}, ip="127.0.0.1", user_agent="demo")
    say(f"create() gives a 256-bit token ({token[:8]}…); Redis stores only its SHA-256:")
    say(f"  keys now: {sorted(k.decode() for k in client.scan_iter(match='demo:sess*'))[:2]}")
    for _ in range(3):
        time.sleep(0.4)
        s = store.get(token)
        say(f"  get() after 0.4 s: {'alive' if s else 'gone'} (each read slides the 0.6 s idle TTL)")
    time.sleep(0.4)
    say(f"  get() at 1.6 s: {store.get(token)} — sliding never passes the 1.5 s absolute lifetime")
    a = store.create("ada", {"n": 1})
    b = store.rotate(a) or ""
    rotated = store.get(b)
    say(f"rotate(): old token -> {store.get(a)}, new token -> {rotated.data if rotated else None}")
    store.update(b, {"n": 2})
    say(f"sessions('ada'): {[(i.id[:8], i.ip) for i in store.sessions('ada')]}")
    say(f"destroy_all('ada') revoked {store.destroy_all('ada')}; a request still in flight can't revive it:")
    say(f"  update() on the dead token -> {store.update(b, {'n': 3})}")
    say(f"bad tokens are just unknown: get('') -> {store.get('')}, get('é'*43) -> {store.get('é' * 43)}")
