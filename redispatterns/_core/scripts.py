"""The Lua registry: ``load("lock_release")`` gives the script in ``lua/lock_release.lua``.

Every script file opens with a contract header, checked by the loader and by a test::

    -- name: lock_release
    -- summary: delete the lock iff it still holds our token
    -- KEYS[1]: the lock key
    -- ARGV[1]: the owner token
    -- returns: 1 when released, 0 when the key holds another token or none
    -- read-only: no

A script taking a variable number of keys writes ``-- KEYS[*]: ...`` (``num_keys == -1``).
``read-only: yes`` marks a script that may be retried after a lost reply. Scripts get every key
through KEYS (never build key names) and read time from ``redis.call('TIME')``.

The folder is ``lua/`` at the repository root. The wheel carries it as ``redispatterns/lua``;
an editable checkout finds it beside the package.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LuaScript", "load", "lua_dir", "names"]

_HEADER = re.compile(r"^--\s*(name|summary|returns|read-only|KEYS\[(\d+|\*)\]|ARGV\[(\d+|\*)\])\s*:\s*(.*)$")


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and contract. ``num_keys`` is -1 for a variable number of keys."""

    name: str
    source: bytes
    sha: str
    num_keys: int
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    returns: str
    read_only: bool
    sha_arg: bytes  # the sha as the EVALSHA argument: ASCII bytes, encoded once


def lua_dir() -> Path:
    """The folder holding the ``.lua`` files (inside the package, else beside it)."""
    here = Path(__file__).resolve().parent.parent  # the redispatterns package
    for candidate in (here / "lua", here.parent / "lua"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no lua/ folder in {here} or {here.parent}")


def names() -> list[str]:
    """Every script name present."""
    return sorted(p.stem for p in lua_dir().glob("*.lua"))


def parse(name: str, source: bytes) -> LuaScript:
    """Parse and check the contract header of one script."""
    fields: dict[str, str] = {}
    keys: dict[str, str] = {}
    argv: dict[str, str] = {}
    for raw in source.decode("utf-8").splitlines():
        if not raw.startswith("--"):
            break
        m = _HEADER.match(raw.strip())
        if not m:
            continue
        tag, kidx, aidx, text = m.groups()
        if kidx is not None:
            keys[kidx] = text
        elif aidx is not None:
            argv[aidx] = text
        else:
            fields[tag] = text.strip()
    if fields.get("name") != name:
        raise ValueError(f"lua/{name}.lua: header must start with '-- name: {name}'")
    for required in ("summary", "returns"):
        if not fields.get(required):
            raise ValueError(f"lua/{name}.lua: header lacks '-- {required}:'")
    if "*" in keys:
        num_keys = -1
    else:
        idx = sorted(int(k) for k in keys)
        if idx != list(range(1, len(idx) + 1)):
            raise ValueError(f"lua/{name}.lua: KEYS must be numbered 1..n, got {idx}")
        num_keys = len(idx)
    sha = hashlib.sha1(source).hexdigest()
    return LuaScript(
        name=name,
        source=source,
        sha=sha,
        sha_arg=sha.encode("ascii"),
        num_keys=num_keys,
        keys=_ordered(keys),
        argv=_ordered(argv),
        returns=fields["returns"],
        read_only=fields.get("read-only", "no").lower() == "yes",
    )


def _ordered(d: dict[str, str]) -> tuple[str, ...]:
    return tuple(d[k] for k in sorted(d, key=lambda s: (s == "*", s.zfill(4))))


@functools.cache
def load(name: str) -> LuaScript:
    """The script ``lua/<name>.lua`` with its parsed contract (cached)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"bad script name {name!r}")
    path = lua_dir() / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script {name!r} in {path.parent}")
    return parse(name, path.read_bytes())
