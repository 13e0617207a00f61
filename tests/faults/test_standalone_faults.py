"""Faults on a real standalone server (each kind found), with the same pattern objects before,
during and after the fault. Clients use a short socket timeout (``TIMEOUT``); every bound below
is loose (a multiple of it), never a tight timing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import redis

import redispatterns as rp
from redispatterns.client import _build
from redispatterns.testing.servers import ServerKind, StandaloneServer

from .conftest import OPTS, TIMEOUT, FaultServers, paused
from .test_outage_errors import Runner, _client, _close, unsent_write_is_never_applied


def _double(x: int) -> int:
    return 2 * x


async def _async_double(x: int) -> int:
    return 2 * x


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Iterator[Runner]:
    r = Runner(request.param == "async")
    yield r
    r.close()


def _timed(run: Runner, call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    out = run(call)
    return out, time.monotonic() - started


def _wait_until(check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true (polled); fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # still down
            pass
        time.sleep(0.02)
    raise AssertionError(f"not recovered within {timeout} s")


def test_hung_server_costs_one_timeout_then_the_breaker_answers(
    run: Runner, server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """SIGSTOP. Must hold: until the breaker opens each call waits about one socket timeout
    (< 1.5 x timeout: a timeout is never retried); once open, calls skip Redis (< timeout / 2
    each, in practice µs) and still answer (the limiter fails open, the cache computes); after
    SIGCONT the same objects use Redis again, within the breaker's reset_after (1 s) + probes."""
    server = fault_servers.standalone(server_kind)
    timeout = 0.5
    one_timeout = 1.5 * timeout + 0.15  # a retried timeout would cost >= 2 x timeout
    client = _client(run, server.url, socket_timeout=timeout)
    is_async = run.loop is not None
    Limiter = rp.AsyncSlidingWindowLimiter if is_async else rp.SlidingWindowLimiter
    limiter: Any = Limiter(1000, 60, client=client, on_error="open")
    limiter.breaker = rp.CircuitBreaker(threshold=3, reset_after=1.0)
    breaker = rp.CircuitBreaker(threshold=3, reset_after=1.0)
    fn: Any = rp.cached(client=client, ttl=60, breaker=breaker)(_async_double if is_async else _double)
    try:
        # a server that just left another test's SIGSTOP may still be draining what queued up
        _wait_until(lambda: run(client.ping), timeout=10)
        assert not run(lambda: limiter.hit("k")).degraded
        assert run(lambda: fn(1)) == 2
        limiter.breaker.reset()
        breaker.reset()
        assert limiter.breaker is not None
        threshold = limiter.breaker.threshold
        with paused(server.node):
            first = [_timed(run, lambda: limiter.hit("k")) for _ in range(threshold)]
            assert all(d.degraded and d.allowed for d, _ in first)
            assert max(t for _, t in first) < one_timeout, [round(t, 3) for _, t in first]
            assert limiter.breaker.state == "open"
            later = [_timed(run, lambda: limiter.hit("k")) for _ in range(20)]
            assert all(d.degraded and d.allowed for d, _ in later)
            assert max(t for _, t in later) < timeout / 2, [round(t, 4) for _, t in later]

            cache_first = [_timed(run, lambda i=i: fn(100 + i)) for i in range(3)]
            assert [v for v, _ in cache_first] == [2 * (100 + i) for i in range(3)]
            assert max(t for _, t in cache_first) < one_timeout, [round(t, 3) for _, t in cache_first]
            assert fn.stats.breaker_state == "open"
            cache_later = [_timed(run, lambda i=i: fn(200 + i)) for i in range(20)]
            assert [v for v, _ in cache_later] == [2 * (200 + i) for i in range(20)]
            assert max(t for _, t in cache_later) < timeout / 2, [round(t, 4) for _, t in cache_later]
        _wait_until(lambda: not run(lambda: limiter.hit("k")).degraded, timeout=5)
        assert limiter.breaker.state == "closed"
        _wait_until(lambda: run(lambda: fn(7)) == 14 and fn.stats.breaker_state == "closed", timeout=5)
    finally:
        _close(run, client)


def test_kill_9_and_restart_on_the_same_port(server_kind: ServerKind) -> None:
    """kill -9 mid-traffic, restart on the same port with its AOF (appendfsync always).
    Must hold: every acknowledged ``Stream.add`` and ``KV.set`` is there after the restart;
    a write that failed was applied at most once (no duplicate payload); while down, callers get
    ServerUnavailable at once (refused); the same objects (stream, consumer, KV, lock, limiter)
    work again without being recreated, within a second of the server answering PING."""
    server = StandaloneServer(server_kind, args=["--appendonly", "yes", "--appendfsync", "always"])
    # an fsync per write on a loaded machine can outlast a short timeout: this test is about data
    client = _build(server.url, {"socket_timeout": 2.0, "socket_connect_timeout": 0.5}, asyncio_=False)
    stream = rp.Stream("orders", client=client)
    consumer = rp.Consumer(stream, "billing", "c1", start="0")
    kv = rp.KV(client, {"m": rp.Mount(prefix="app:")})
    lock = rp.Lock("job", client=client, ttl=5)
    limiter = rp.SlidingWindowLimiter(10_000, 60, client=client)
    consumer.read(1, block=0.01)  # creates the group before the crash
    acked: list[tuple[str, str]] = []
    kv_acked: dict[str, int] = {}
    errors: list[BaseException] = []
    ok_at: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                acked.append((stream.add({"seq": str(seq)}), str(seq)))
                kv.set("m", f"k{seq % 50}", seq)
                kv_acked[f"k{seq % 50}"] = seq
                ok_at.append(time.monotonic())
            except Exception as exc:
                errors.append(exc)
                time.sleep(0.005)

    try:
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        server.kill()
        time.sleep(0.3)
        down_errors = len(errors)
        server.restart(keep_data=True)
        back = time.monotonic()
        recovered = _wait_until(lambda: bool(ok_at) and ok_at[-1] > back, 5)
        time.sleep(0.3)
        stop.set()
        t.join(10)
        assert down_errors > 0, "the writer never saw the server down"
        assert all(isinstance(e, rp.ServerUnavailable) for e in errors), {type(e).__name__ for e in errors}
        assert recovered < 1.0
        admin: Any = redis.Redis.from_url(server.url)
        entries = admin.xrange("rp:stream:{orders}")
        present = [json.loads(f[b"seq"]) for _, f in entries]
        assert len(present) == len(set(present)), "a write was applied twice"
        ids = {i.decode() for i, _ in entries}
        lost = [a for a in acked if a[0] not in ids]
        assert not lost, f"{len(lost)} acknowledged entries lost, e.g. {lost[:3]}"
        assert len(present) <= len(acked) + len(errors)
        stored = {k: kv.get("m", k) for k in kv_acked}
        assert all(stored[k] is not None and stored[k] >= v for k, v in kv_acked.items())
        # the same objects, not recreated
        batch = consumer.read(100, block=0.1)
        assert batch and consumer.ack(*batch) == len(batch)
        with lock.acquire(timeout=1) as held:
            assert held.fence >= 1
        assert limiter.hit("u").allowed
        assert time.monotonic() - back < 10
    finally:
        stop.set()
        client.close()
        server.stop()


def test_client_pause_writes(server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """CLIENT PAUSE WRITE. Must hold: a pause shorter than the socket timeout only delays a
    write (it succeeds, once); a longer one makes the caller wait about one timeout and get
    ServerUnavailable, and the write is never sent twice (the score is incremented at most once)."""
    server = fault_servers.standalone(server_kind)
    timeout = 0.5  # room for a loaded machine between the pause's end and the reply
    client = _build(server.url, {"socket_timeout": timeout}, asyncio_=False)
    admin: Any = redis.Redis.from_url(server.url)
    board = rp.Leaderboard("pause-board", client=client)
    try:
        board.submit("a", 0, "latest")
        admin.execute_command("CLIENT", "PAUSE", 100, "WRITE")
        started = time.monotonic()
        board.submit("a", 1, "incr")
        took = time.monotonic() - started
        assert 0.05 < took < timeout
        assert board.score("a") == 1

        admin.execute_command("CLIENT", "PAUSE", int(timeout * 1000 * 2), "WRITE")
        started = time.monotonic()
        with pytest.raises(rp.ServerUnavailable) as caught:
            board.submit("a", 1, "incr")
        took = time.monotonic() - started
        assert isinstance(caught.value, redis.exceptions.TimeoutError)  # still what it was
        assert took < 2 * timeout
        time.sleep(timeout * 2)
        assert board.score("a") in (1, 2)  # applied at most once, never retried
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        client.close()


def test_script_flush_is_survived(run: Runner, server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """SCRIPT FLUSH between two calls of every scripted pattern: the second call reloads the
    script on NOSCRIPT and answers as if nothing happened (same objects)."""
    server = fault_servers.standalone(server_kind)
    client = _client(run, server.url)
    admin: Any = redis.Redis.from_url(server.url)
    is_async = run.loop is not None
    mount = rp.Mount(prefix="flush:")
    lock: Any = (rp.AsyncLock if is_async else rp.Lock)("flush-lock", client=client, ttl=5)
    limiter: Any = (rp.AsyncSlidingWindowLimiter if is_async else rp.SlidingWindowLimiter)(
        100, 60, client=client
    )
    sessions: Any = (rp.AsyncSessionStore if is_async else rp.SessionStore)(client)
    board: Any = (rp.AsyncLeaderboard if is_async else rp.Leaderboard)("flush-board", client=client)
    kv: Any = (rp.AsyncKV if is_async else rp.KV)(client, {"m": mount})
    try:
        for n in (1, 2, 3):
            held = run(lambda: lock.acquire(timeout=1))
            run(held.release)
            assert run(lambda: limiter.hit("x")).remaining == 100 - n
            token = run(partial(sessions.create, "u", {"n": n}))
            assert run(partial(sessions.get, token)) is not None
            run(partial(board.submit, "m", n, "incr"))
            run(partial(kv.merge, "m", "k", {"n": n}))
            admin.script_flush()
        assert run(lambda: board.score("m")) == 6
        assert run(lambda: kv.get("m", "k")) == {"n": 3}
    finally:
        admin.close()
        _close(run, client)


def test_connections_killed_mid_pipeline(server_kind: ServerKind, fault_servers: FaultServers) -> None:
    """CLIENT KILL of every client connection every few ms while threads run limiter hits,
    stream batches and sets. Must hold: every failure is ServerUnavailable (no other type, no
    hang); a limiter never admits more than its limit (a lost reply never turns into an extra
    admission); no acknowledged stream entry is lost and none is written twice."""
    server = fault_servers.standalone(server_kind)
    client = _build(server.url, OPTS, asyncio_=False)
    admin: Any = redis.Redis.from_url(server.url)
    admin.flushall()
    limit = 150
    limiter = rp.SlidingWindowLimiter(limit, 60, client=client)
    stream = rp.Stream("killed", client=client)
    allowed: list[int] = []
    acked: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def hitter() -> None:
        while not stop.is_set():
            try:
                allowed.append(int(limiter.hit("k").allowed))
            except Exception as exc:
                errors.append(exc)

    def adder(w: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            batch = [{"p": f"{w}-{seq}-{i}"} for i in range(5)]
            try:
                stream.add_many(batch)
                acked.extend(e["p"] for e in batch)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=hitter) for _ in range(3)] + [
        threading.Thread(target=adder, args=(w,)) for w in range(2)
    ]
    for t in threads:
        t.start()
    kills = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            kills += int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
            time.sleep(0.003)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert kills > 10 and errors, f"the faults never hit (kills={kills}, errors={len(errors)})"
    assert all(isinstance(e, rp.ServerUnavailable) for e in errors), {
        type(e).__name__: str(e) for e in errors
    }
    assert sum(allowed) <= limit
    present = [json.loads(f[b"p"]) for _, f in admin.xrange("rp:stream:{killed}")]
    assert len(present) == len(set(present)), "an entry was written twice"
    assert not set(acked) - set(present), "acknowledged entries were lost"
    # the same objects still work
    assert stream.add({"p": "after"})
    limiter.reset("k")
    assert limiter.hit("k").allowed
    admin.close()
    client.close()


def test_pool_exhaustion_waits_then_server_unavailable(
    run: Runner, server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """A pool of one connection, held elsewhere. Must hold: a call waits for the pool's timeout
    (0.5 s here; 10 s by default), then raises ServerUnavailable; once the connection is given
    back, the same objects work."""
    server = fault_servers.standalone(server_kind)
    client = _client(run, server.url, max_connections=1, timeout=0.5)
    is_async = run.loop is not None
    limiter: Any = (rp.AsyncSlidingWindowLimiter if is_async else rp.SlidingWindowLimiter)(
        10, 60, client=client, on_error="raise"
    )
    pool = client.connection_pool
    try:
        assert run(lambda: limiter.hit("k")).allowed
        held = run(pool.get_connection)
        started = time.monotonic()
        with pytest.raises(rp.ServerUnavailable) as caught:
            run(lambda: limiter.hit("k"))
        took = time.monotonic() - started
        assert isinstance(caught.value, redis.exceptions.ConnectionError)
        assert 0.4 < took < 2.0
        run(lambda: pool.release(held))
        assert run(lambda: limiter.hit("k")).allowed
    finally:
        _close(run, client)


def test_out_of_memory_with_noeviction(server_kind: ServerKind) -> None:
    """maxmemory reached under ``noeviction``. Must hold: writes that need memory raise
    ``ServerError`` (also redis-py's ``OutOfMemoryError``, the server's words in the message),
    never ``ServerUnavailable`` (the server is up); reads and deletes still work; a cached
    function still answers (computed, not stored); a limiter hit that must write is refused
    the same way (``on_error="raise"``) or gets the degraded decision (``"open"``)."""
    server = StandaloneServer(server_kind, args=["--maxmemory-policy", "noeviction"])
    client = _build(server.url, OPTS, asyncio_=False)
    admin: Any = redis.Redis.from_url(server.url)
    try:
        kv = rp.KV(client, {"m": rp.Mount(prefix="oom:")})
        kv.set("m", "before", 1)
        _fill(admin)
        writes: dict[str, Callable[[], Any]] = {
            "lock": lambda: rp.Lock("l", client=client).acquire(timeout=1),
            "session": lambda: rp.SessionStore(client).create("u", {"a": 1}),
            "kv": lambda: kv.set("m", "k", 1),
            "stream": lambda: rp.Stream("s", client=client).add({"a": "1"}),
            "leaderboard": lambda: rp.Leaderboard("b", client=client).submit("m", 1),
        }
        for name, call in writes.items():
            _fill(admin)
            with pytest.raises(rp.ServerError, match="maxmemory") as caught:
                call()
            assert isinstance(caught.value, redis.exceptions.OutOfMemoryError), name
            assert not isinstance(caught.value, rp.ServerUnavailable), name
        assert kv.get("m", "before") == 1
        assert kv.delete("m", "before")
        fn: Any = rp.cached(client=client, ttl=60)(_double)
        assert fn(21) == 42
        # a limiter hit that must record writes: refused like any write, or the degraded decision
        strict = rp.SlidingWindowLimiter(3, 60, client=client, on_error="raise")
        with pytest.raises(rp.ServerError) as refused:
            strict.hit("x")
        assert isinstance(refused.value, redis.exceptions.OutOfMemoryError)
        lenient = rp.SlidingWindowLimiter(3, 60, client=client, on_error="open")
        decision = lenient.hit("y")
        assert decision.degraded and decision.allowed
    finally:
        admin.close()
        client.close()
        server.stop()


def _fill(admin: Any) -> None:
    """Store ~2 MB, then set maxmemory 1 MB below what is used: every write that needs memory is
    refused with OOM, with a margin no connection or buffer can blur."""
    if int(admin.config_get("maxmemory")["maxmemory"]):
        return
    for i in range(1000):
        admin.set(f"fill:{i}", "x" * 2_000)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used - 1_000_000)


SHORT_RESET = 0.1  # a breaker reset_after shorter than the socket timeout (the defaults: 1 s < 5 s)


def test_cache_breaker_holds_when_the_timeout_outlasts_reset_after(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """With the library's defaults a hung call (5 s socket timeout) outlasts the breaker's
    reset_after (1 s). Must hold: once open, the breaker's wait counts from the failure, not
    from the call's start, so the next calls skip Redis instead of each probing for a timeout."""
    server = fault_servers.standalone(server_kind)
    client = _build(server.url, OPTS, asyncio_=False)
    breaker = rp.CircuitBreaker(threshold=2, reset_after=SHORT_RESET)
    fn: Any = rp.cached(client=client, ttl=60, breaker=breaker)(_double)
    try:
        assert fn(1) == 2
        with paused(server.node):
            for i in range(2):
                assert fn(10 + i) == 2 * (10 + i)
            assert breaker.state == "open"
            took = [_timed(Runner(False), lambda i=i: fn(20 + i))[1] for i in range(3)]
            assert max(took) < TIMEOUT / 2, [round(t, 3) for t in took]
    finally:
        client.close()


def test_limiter_breaker_holds_when_the_timeout_outlasts_reset_after(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """The limiter twin of the test above (on_error='open')."""
    server = fault_servers.standalone(server_kind)
    client = _build(server.url, OPTS, asyncio_=False)
    limiter = rp.SlidingWindowLimiter(1000, 60, client=client, on_error="open")
    limiter.breaker = rp.CircuitBreaker(threshold=2, reset_after=SHORT_RESET)
    try:
        assert not limiter.hit("k").degraded
        with paused(server.node):
            for _ in range(2):
                assert limiter.hit("k").degraded
            assert limiter.breaker.state == "open"
            took = [_timed(Runner(False), lambda: limiter.hit("k"))[1] for _ in range(3)]
            assert max(took) < TIMEOUT / 2, [round(t, 3) for t in took]
    finally:
        client.close()


class _SmallSendBuffer(redis.asyncio.Connection):
    """A connection whose socket sends through a 64 KiB buffer (set on every connect, so a
    reconnect keeps it): a paused server then takes about 260 KiB of a write, where the default
    buffers took 4 MiB (measured on loopback, Linux 6.1)."""

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[no-untyped-call]
        sock = self._writer.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)


async def _drain_waits_after_writelines() -> bool:
    """Whether this Python's asyncio makes ``drain()`` wait after a ``writelines()`` the socket
    could not take, as redis-py's async write relies on. From 3.12 until CPython's fix for
    gh-127655 (3.13.0 and 3.12.1 here), the selector transport's ``writelines`` never paused
    its protocol: ``drain()`` returned at once, and a write to a hung server timed out reading."""
    import asyncio

    ours, peer = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    try:
        writer.writelines([b"x" * (8 << 20)])  # far beyond a socket pair's buffers; never read
        try:
            await asyncio.wait_for(writer.drain(), 0.05)
        except asyncio.TimeoutError:
            return True
        return False
    finally:
        writer.transport.abort()
        peer.close()


def test_async_writes_to_a_hung_server_cost_one_timeout(
    server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """SIGSTOP, on connect_async()'s connections. Must hold: a write far bigger than the socket
    buffers take, on a connection opened before, waits for them under the timeout and fails
    writing (reading, on a Python whose asyncio does not wait: see above; never forever: a write
    without a timeout hangs this test); a small command costs one timeout too; then, the server
    back, the same client works."""
    import asyncio

    server = fault_servers.standalone(server_kind)
    timeout = 0.5
    one_timeout = 1.5 * timeout + 0.15
    # eight times what the small buffers take. Not tens of MiB past the default buffers: the
    # client copies a write on its way to the socket (the packer, then asyncio's slice and buffer
    # on Python 3.11: 39,000 page faults for 32 MiB, measured), work that grows with the write,
    # and in CI runs on a 2-core VM a 32 MiB write took 1.1-1.8 s where the small one took 0.5 s
    big = b"x" * (2 << 20)

    async def scenario() -> tuple[list[float], list[str]]:
        client = rp.connect_async(server.url, socket_timeout=timeout, connection_class=_SmallSendBuffer)
        try:
            assert await client.ping()
            assert type(client.connection_pool).__name__ == "AsyncQueuingPool"  # type: ignore[union-attr]
            took, errors = [], []
            with paused(server.node):
                for value in (big, b"small"):
                    started = time.monotonic()
                    with pytest.raises((redis.TimeoutError, redis.ConnectionError)) as err:
                        await client.set("hung-write", value)
                    took.append(time.monotonic() - started)
                    errors.append(str(err.value))
            for _ in range(100):  # the server drains what was queued before it answers again
                try:
                    if await client.set("hung-write-after", b"back"):
                        break
                except (redis.TimeoutError, redis.ConnectionError):
                    await asyncio.sleep(0.05)
            # (a timed-out write may still be applied later: its bytes were in the socket buffers)
            assert await client.get("hung-write-after") == b"back"
            return took, errors
        finally:
            await client.aclose()

    took, errors = asyncio.run(scenario())
    if asyncio.run(_drain_waits_after_writelines()):
        assert "writing" in errors[0], errors  # the big write waited on the socket, not on a reply
    else:  # the write returned with its bytes queued in asyncio: the reply's timeout bounds it
        assert "reading" in errors[0], errors
    assert max(took) < one_timeout, [round(t, 3) for t in took]


class _SmallSendBufferSync(redis.Connection):
    """The sync twin of :class:`_SmallSendBuffer` (a test fixture: the socket option only)."""

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        return sock


def test_write_that_timed_out_unsent_is_never_applied(
    run: Runner, server_kind: ServerKind, fault_servers: FaultServers
) -> None:
    """SIGSTOP, on connect()'s and connect_async()'s connections. Must hold: a write the server
    had not taken whole when it timed out is never applied, however the server comes back: the
    server discards a cut command. An asyncio connection that fails drops what it had not sent
    (an abort); with redis-py's plain close it sent the rest once the server read again, and the
    write was applied then, after writes acknowledged since (a 32 MiB SET, seen in a CI run)."""
    server = fault_servers.standalone(server_kind)
    cls = _SmallSendBuffer if run.loop else _SmallSendBufferSync
    client = _client(run, server.url, socket_timeout=0.5, connection_class=cls)
    try:
        unsent_write_is_never_applied(run, client, [server.node], 2 << 20)
    finally:
        _close(run, client)
