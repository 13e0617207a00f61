"""The built wheel carries lua/ and runs a Lua-backed call from a clean virtualenv."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import redispatterns as rp
from redispatterns._core.scripts import lua_dir, names
from redispatterns._core.clock import server_time_us
from redispatterns._runner import run_sync
where = str(lua_dir())
assert "site-packages" in where and where.endswith("redispatterns/lua"), where
assert "core_time" in names()
print("time", run_sync(rp.connect(sys.argv[1]), server_time_us()))
"""


@pytest.mark.slow
def test_wheel_carries_lua_and_runs_a_script(tmp_path: Path, standalone_url: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("redispatterns-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    lua_files = sorted(n for n in names if n.startswith("redispatterns/lua/") and n.endswith(".lua"))
    expected = sorted(f"redispatterns/lua/{p.name}" for p in (ROOT / "lua").glob("*.lua"))
    assert lua_files == expected
    assert "redispatterns/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=300)
    out = subprocess.run(
        [str(py), "-c", PROBE, standalone_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout: the import must come from the installed wheel
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[1]) > 1_600_000_000_000_000
