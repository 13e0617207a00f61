"""The README's Python snippets are valid Python, name only things the package exports, and run as
pasted: each in a fresh interpreter against a real server (``$REDIS_URL`` points at a standalone
server the suite started, flushed first). A block that cannot run (it names the hosts of a
deployment) is preceded by ``<!-- not run: why -->``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

import redispatterns as rp

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 8
    assert sum(why is None for _, why in RUNS) >= len(RUNS) - 3  # nearly every block runs


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_compiles_and_uses_real_names(index: int) -> None:
    source = BLOCKS[index]
    tree = ast.parse(source, filename=f"README block {index + 1}")
    params = {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args}
    if "rp" in params:  # the pytest plugin's `rp` harness fixture, not the package
        return
    missing = sorted(
        {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "rp"
            and not hasattr(rp, node.attr)
        }
    )
    assert not missing, f"README block {index + 1} uses rp.{missing}, which the package lacks"


FENCE = re.compile(r"(<!-- not run: (?P<why>[^>]*?) -->\n)?```python\n(?P<src>.*?)```", re.S)
RUNS = [(m["src"], m["why"]) for m in FENCE.finditer(README)]
RUNNER = textwrap.dedent(
    """
    import ast, asyncio, sys, types
    src = sys.stdin.read()
    code = compile(src, "README block", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    ns = {"__name__": "__readme__"}
    result = eval(code, ns)
    if isinstance(result, types.CoroutineType):
        asyncio.run(result)
    """
)


def _first_line(src: str) -> str:
    return next((line for line in src.splitlines() if line.strip()), "")[:60]


@pytest.mark.parametrize("index", range(len(RUNS)), ids=lambda i: f"block{i + 1}")
def test_snippet_runs_as_pasted(index: int, standalone_url: str) -> None:
    src, why = RUNS[index]
    if why is not None:
        assert why.strip(), "a block that is not run says why"
        pytest.skip(f"not run: {why}")
    redis.Redis.from_url(standalone_url).flushdb()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=src,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={"REDIS_URL": standalone_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, f"README block {index + 1} ({_first_line(src)!r}):\n{proc.stderr[-3000:]}"
