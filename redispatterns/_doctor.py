"""The I/O half of ``python -m redispatterns doctor``: ask every node, print the findings.

The checks are pure (:mod:`redispatterns._core.doctor`); this module only connects, runs the
gathering flows on each node of a cluster (or the one server) and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._core import doctor as core
from ._runner import run_sync, server_info

__all__ = ["check"]


def _nodes(client: Any) -> list[tuple[str, Any]]:
    """(address, plain client) of every node: each cluster node, or the server itself."""
    get_nodes = getattr(client, "get_nodes", None)
    if get_nodes is None:
        kw = client.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"
        return [(str(where), client)]
    out = []
    for node in get_nodes():
        if node.redis_connection is not None:
            out.append((f"{node.host}:{node.port}", node.redis_connection))
    return sorted(out, key=lambda pair: pair[0])


def check(
    client: Any, uses: Sequence[str] | None, *, strict: bool = False, say: Callable[[str], None] = print
) -> int:
    """Print the server's description and every finding; return the exit code (1: blocking).

    ``uses=None``: check for every pattern, but only the server's own health blocks."""
    named = uses is not None
    uses = core.PATTERNS if uses is None else uses
    info = server_info(client)
    say(f"server        {info.kind} {info.version_text}")
    say(f"mode          {info.mode}")
    say(f"capabilities  {', '.join(sorted(info.capabilities)) or '-'}")
    say(f"patterns      {', '.join(uses)}" + ("" if named else " (all: none named with --uses)"))
    nodes = [run_sync(c, core.gather(address)) for address, c in _nodes(client)]
    cluster = None
    if info.mode == "cluster":
        cluster = run_sync(_nodes(client)[0][1], core.cluster_facts())
        for start, end, primary, replicas in cluster.slots:
            say(f"  slots {start:>5}-{end:<5} primary {primary}  replicas {replicas}")
    say("")
    findings = core.diagnose(nodes, uses, cluster)
    for line in core.render(findings, show_nodes=len(nodes) > 1, named=named):
        say(line)
    return core.exit_code(findings, strict=strict, named=named)
