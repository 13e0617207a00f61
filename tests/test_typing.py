"""The public types reject wrong user code: every ``# E: <text>`` line in ``tests/typing/bad/`` gets
that mypy error, and no other line gets one (the good files are checked by ``make check``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BAD = Path(__file__).parent / "typing" / "bad"
EXPECT = re.compile(r"#\s*E:\s*(.+?)\s*$")
REPORTED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<msg>.*)$")


def _expected(path: Path) -> dict[int, str]:
    return {
        n: m.group(1) for n, line in enumerate(path.read_text().splitlines(), 1) if (m := EXPECT.search(line))
    }


@pytest.mark.parametrize("path", sorted(BAD.glob("[!_]*.py")), ids=lambda p: p.name)
def test_mypy_rejects_exactly_the_marked_lines(path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    out, _err, _status = api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "--hide-error-context",
         "--no-error-summary", "--show-absolute-path", str(path)]
    )  # fmt: skip
    got: dict[int, list[str]] = {}
    for line in out.splitlines():
        m = REPORTED.match(line)
        if m and Path(m["file"]).resolve() == path.resolve():
            got.setdefault(int(m["line"]), []).append(m["msg"])
    expected = _expected(path)
    assert expected, f"{path.name} marks no line with '# E: ...'"
    assert set(got) == set(expected), f"errors on lines {sorted(got)}, expected on {sorted(expected)}:\n{out}"
    for n, text in expected.items():
        assert any(text in msg for msg in got[n]), f"line {n}: expected {text!r}, got {got[n]}"
