"""The README's Python snippets are valid Python and name only things the package exports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import redispatterns as rp

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 8


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
