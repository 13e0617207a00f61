"""The slot auditor: records every multi-key command, script or transaction whose keys span
Cluster slots, so a suite run on one node still proves Cluster safety.

``SlotAuditor().watch(client)`` wraps the client's ``execute_command`` and ``pipeline`` (on a
standalone client of ``connect()``, whose pool the runners use directly, each connection's
``send_command`` instead of ``execute_command``); the pytest plugin fails a test that leaves
violations behind.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from .._core.keys import slot
from .._pools import DIRECT

__all__ = ["SlotAuditor", "command_keys"]


def _name(a: Any) -> str:
    return (a.decode() if isinstance(a, bytes) else str(a)).upper()


def _numkeys(args: Sequence[Any], at: int) -> list[Any]:
    try:
        n = int(args[at])
    except (IndexError, ValueError):
        return []
    return list(args[at + 1 : at + 1 + n])


def command_keys(args: Sequence[Any]) -> list[Any]:
    """The key arguments of a multi-key command (empty for single-key or unknown commands)."""
    if not args:
        return []
    name = _name(args[0])
    rest = list(args[1:])
    if name in ("MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "PFCOUNT", "PFMERGE",
                "SINTER", "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"):  # fmt: skip
        return rest
    if name in ("MSET", "MSETNX"):
        return rest[0::2]
    if name in ("RENAME", "RENAMENX", "SMOVE", "LMOVE", "RPOPLPUSH", "BLMOVE", "BRPOPLPUSH",
                "COPY", "ZRANGESTORE", "GEOSEARCHSTORE"):  # fmt: skip
        return rest[:2]
    if name in ("BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX"):
        return rest[:-1]
    if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO",
                "ZUNION", "ZINTER", "ZDIFF", "SINTERCARD", "ZINTERCARD", "LMPOP", "ZMPOP"):  # fmt: skip
        return _numkeys(args, 2)
    if name in ("ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"):
        return [args[1], *_numkeys(args, 2)]
    if name in ("XREAD", "XREADGROUP"):
        upper = [_name(a) if isinstance(a, (str, bytes)) else "" for a in args]
        if "STREAMS" in upper:
            tail = list(args[upper.index("STREAMS") + 1 :])
            return tail[: len(tail) // 2]
    return []


class SlotAuditor:
    """Collects cross-slot violations seen on the clients it watches."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def check(self, keys: Sequence[Any], what: str) -> None:
        if len(keys) > 1:
            slots = {slot(k if isinstance(k, (str, bytes)) else str(k)) for k in keys}
            if len(slots) > 1:
                self.violations.append(f"{what} spans slots {sorted(slots)}: keys {list(keys)!r}")

    def _check_args(self, args: Sequence[Any]) -> None:
        self.check(command_keys(args), _name(args[0]) if args else "?")

    def watch(self, client: Any) -> Any:
        """Wrap ``client`` in place (and return it)."""
        orig_exec = client.execute_command
        orig_pipe = client.pipeline
        auditor = self

        pool = getattr(client, DIRECT, None)
        if pool is not None:  # every command but a pipeline's goes through a connection's send_command
            self._watch_connections(pool)
        elif inspect.iscoroutinefunction(orig_exec):

            @functools.wraps(orig_exec)
            async def aexec(*args: Any, **kw: Any) -> Any:
                auditor._check_args(args)
                return await orig_exec(*args, **kw)

            client.execute_command = aexec
        else:

            @functools.wraps(orig_exec)
            def exec_(*args: Any, **kw: Any) -> Any:
                auditor._check_args(args)
                return orig_exec(*args, **kw)

            client.execute_command = exec_

        @functools.wraps(orig_pipe)
        def pipeline(transaction: bool = True, *a: Any, **kw: Any) -> Any:
            pipe = orig_pipe(transaction, *a, **kw)
            auditor._watch_pipeline(pipe, transaction)
            return pipe

        client.pipeline = pipeline
        return client

    def _watch_connections(self, pool: Any) -> None:
        """Wrap ``send_command`` of every connection ``pool`` makes from now on."""
        make = pool.make_connection
        auditor = self

        def make_connection() -> Any:
            conn = make()
            send = conn.send_command
            if inspect.iscoroutinefunction(send):

                async def asend(*args: Any, **kw: Any) -> Any:
                    auditor._check_args(args)
                    return await send(*args, **kw)

                conn.send_command = asend
            else:

                def send_(*args: Any, **kw: Any) -> Any:
                    auditor._check_args(args)
                    return send(*args, **kw)

                conn.send_command = send_
            return conn

        pool.make_connection = make_connection

    def _watch_pipeline(self, pipe: Any, transaction: bool) -> None:
        orig = pipe.execute
        auditor = self

        def audit() -> None:
            stack = getattr(pipe, "command_stack", None) or getattr(pipe, "_command_stack", [])
            all_keys: list[Any] = []
            for cmd in stack:
                args = getattr(cmd, "args", None)
                if args is None and isinstance(cmd, tuple):
                    args = cmd[0]
                if not args:
                    continue
                keys = command_keys(args)
                auditor.check(keys, _name(args[0]))
                if transaction:
                    all_keys.extend(keys or ([args[1]] if len(args) > 1 else []))
            if transaction:
                auditor.check(all_keys, "MULTI/EXEC transaction")

        if inspect.iscoroutinefunction(orig):

            async def aexecute(*a: Any, **kw: Any) -> Any:
                audit()
                return await orig(*a, **kw)

            pipe.execute = aexecute
        else:

            def execute(*a: Any, **kw: Any) -> Any:
                audit()
                return orig(*a, **kw)

            pipe.execute = execute
