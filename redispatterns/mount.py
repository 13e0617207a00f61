"""Binding a :class:`Mount` to a client: the ``mount=`` every pattern accepts.

``Namespace`` holds a mount's configuration and, lazily, its client, so patterns can be built at
import time (``@cached`` on a module-level function) and connect on first use.
"""

from __future__ import annotations

from typing import Any

from ._core.keys import Keyspace
from ._core.mount import DEFAULT_PREFIX, Mount
from .client import check_client, default_async_client, default_client

__all__ = ["Mount", "Namespace", "resolve"]


class Namespace:
    """A mount bound to a client (sync or asyncio): client, prefix, default TTL, mode."""

    __slots__ = ("_client", "asyncio", "keyspace", "mount", "name")

    def __init__(
        self,
        mount: Mount | None = None,
        client: Any = None,
        *,
        asyncio: bool | None = None,
        name: str = "",
    ) -> None:
        self.mount = mount if mount is not None else Mount()
        if not isinstance(self.mount, Mount):
            raise TypeError(f"mount must be a redispatterns.Mount, not {type(self.mount).__name__}")
        if client is not None:
            from .client import is_async_client

            detected = is_async_client(client)
            if asyncio is not None and asyncio != detected:
                check_client(client, asyncio_=asyncio)
            asyncio = detected
            check_client(client, asyncio_=asyncio)
        self._client = client
        self.asyncio = bool(asyncio)
        self.keyspace: Keyspace = self.mount.keyspace
        self.name = name or self.mount.prefix

    @property
    def client(self) -> Any:
        """The bound client; the process default (see ``configure``) when none was given."""
        if self._client is not None:
            return self._client
        return default_async_client() if self.asyncio else default_client()

    @property
    def prefix(self) -> str:
        return self.mount.prefix

    @property
    def ttl(self) -> float | None:
        return self.mount.ttl

    @property
    def mode(self) -> str:
        return self.mount.mode

    def check_read(self, what: str) -> None:
        self.mount.check_read(what, self.name)

    def check_write(self, what: str) -> None:
        self.mount.check_write(what, self.name)

    def child(self, *parts: str) -> Namespace:
        """The same binding with a longer prefix (a pattern's own corner of the mount)."""
        ns = Namespace.__new__(Namespace)
        ns.mount, ns._client, ns.asyncio, ns.name = (
            self.mount,
            self._client,
            self.asyncio,
            self.name,
        )
        ns.keyspace = self.keyspace.child(*parts)
        return ns

    def __repr__(self) -> str:
        flavour = "async" if self.asyncio else "sync"
        return f"<Namespace {self.name!r} prefix={self.prefix!r} mode={self.mode} {flavour}>"


def resolve(mount: Mount | Namespace | None, client: Any, *, asyncio: bool) -> Namespace:
    """Turn a pattern's ``mount=`` / ``client=`` arguments into one :class:`Namespace`.

    * a ``Namespace`` (e.g. ``kv.mount("user")``) is used as is; its flavour must match;
    * a ``Mount`` is bound to ``client`` (or the process default);
    * ``None`` means the default mount (prefix ``"rp:"``, read-write, no TTL).
    """
    if isinstance(mount, Namespace):
        if client is not None:
            raise ValueError("pass either mount= (a bound namespace) or client=, not both")
        if mount.asyncio != asyncio:
            want = "an asyncio" if asyncio else "a sync"
            raise TypeError(f"this API needs {want} namespace; {mount!r} is the other flavour")
        return mount
    if mount is not None and not isinstance(mount, Mount):
        raise TypeError(
            f"mount must be a redispatterns.Mount or a bound namespace, not {type(mount).__name__}"
        )
    return Namespace(mount or Mount(prefix=DEFAULT_PREFIX), client, asyncio=asyncio)
