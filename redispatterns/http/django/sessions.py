"""A Django session engine over :class:`redispatterns.SessionStore`.

``SESSION_ENGINE = "redispatterns.http.django.sessions"``, configured by the optional setting
``REDISPATTERNS_SESSIONS = {"url": "redis://...", "prefix": "djsess:", "secret": "..."}``
(``url`` defaults to ``$REDIS_URL``; the idle TTL is ``SESSION_COOKIE_AGE``).

The session key is the store's token (Redis keeps only its hash). Sessions are indexed by
user: a visitor's session is anonymous; when ``django.contrib.auth.login`` puts a user id in it,
the next save moves its data to a new session of that user under a new key (the anonymous one
is revoked), so ``SessionStore.sessions(user_id)`` lists a user's devices and
``destroy_all(user_id)`` logs them out everywhere. Saves write changed fields only
(``HSET``/``HDEL`` in one script): concurrent requests that change different keys lose nothing.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError

from ...client import connect
from ...mount import Mount
from ...session import SessionStore as Store
from ..session import anonymous_user_id

__all__ = ["SessionStore", "store"]

AUTH_KEY = "_auth_user_id"  # django.contrib.auth.SESSION_KEY


@functools.lru_cache(maxsize=1)
def store() -> Store:
    """The process's store, built once from ``REDISPATTERNS_SESSIONS``."""
    conf = dict(getattr(settings, "REDISPATTERNS_SESSIONS", {}))
    client = conf.pop("client", None) or connect(conf.pop("url", None))
    mount = Mount(prefix=conf.pop("prefix", "djsess:"))
    return Store(client, mount=mount, ttl=float(settings.SESSION_COOKIE_AGE), **conf)


class SessionStore(SessionBase):
    """Django's ``request.session`` backed by Redis sliding sessions."""

    _session_key: str | None

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._rp_user: str | None = None  # the user the stored session belongs to
        self._rp_loaded: set[str] = set()  # the keys as loaded, to delete the removed ones

    def _user_of(self, data: dict[str, Any]) -> str:
        uid = data.get(AUTH_KEY)
        return str(uid) if uid is not None else anonymous_user_id()

    def load(self) -> dict[str, Any]:
        s = store().get(self.session_key) if self.session_key else None
        if s is None:
            self._session_key = None
            return {}
        self._rp_user, self._rp_loaded = s.user_id, set(s.data)
        return dict(s.data)

    def exists(self, session_key: str) -> bool:
        return bool(session_key) and store().get(session_key) is not None

    def create(self) -> None:
        data = self._get_session(no_load=True)  # the data in hand (cycle_key keeps it), else {}
        self._rp_user = self._user_of(data)
        self._session_key = store().create(self._rp_user, data)
        self._rp_loaded = set(data)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None or must_create:
            self.create()  # the store makes the key: it can never collide with an existing one
            return
        data = self._get_session()
        uid = data.get(AUTH_KEY)
        if uid is not None and str(uid) != self._rp_user:  # logged in: a new id for the user
            old = self.session_key
            self._session_key = None
            self.create()
            store().destroy(old)
            return
        removed = self._rp_loaded - set(data)
        if store().update(self.session_key, data, remove=removed) is None:
            raise UpdateError
        self._rp_loaded = set(data)

    def delete(self, session_key: str | None = None) -> None:
        key = session_key or self.session_key
        if key:
            store().destroy(key)

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis expires sessions."""
