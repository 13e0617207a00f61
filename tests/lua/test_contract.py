"""Every Lua script is used by the package, and no script calls KEYS or builds key names."""

from __future__ import annotations

import re
from pathlib import Path

import redispatterns
from redispatterns._core.scripts import load, names

PKG = Path(redispatterns.__file__).resolve().parent


def _package_source() -> str:
    return "\n".join(p.read_text() for p in PKG.rglob("*.py"))


def test_every_script_is_loaded_somewhere() -> None:
    source = _package_source()
    unused = [n for n in names() if f'"{n}"' not in source and f"'{n}'" not in source]
    assert not unused, f"scripts nothing loads: {unused}"


def test_scripts_never_scan_the_keyspace() -> None:
    for name in names():
        text = load(name).source.decode()
        for banned in ("'KEYS'", '"KEYS"', "'SCAN'", '"SCAN"', "'FLUSHALL'", "'FLUSHDB'"):
            assert banned not in text.upper(), f"{name}.lua calls {banned}"


def test_scripts_take_keys_only_from_keys() -> None:
    """A key argument built by concatenation (``'prefix' .. ARGV[1]``) breaks Cluster routing."""
    call = re.compile(r"redis\.p?call\(\s*'(\w+)'\s*,\s*([^,)]+)")
    for name in names():
        for m in call.finditer(load(name).source.decode()):
            cmd, first = m.group(1).upper(), m.group(2).strip()
            if cmd in ("TIME", "PUBLISH", "SPUBLISH"):
                continue
            assert ".." not in first, f"{name}.lua builds a key name for {cmd}: {first}"
