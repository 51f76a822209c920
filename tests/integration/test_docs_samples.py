"""Every Python sample of the documentation runs.

The pages include their Python code from ``docs/examples/*.py`` (``--8<-- "name.py"``, pymdownx
snippets), so what a reader sees is what runs here: each file as ``__main__`` against a fresh
database (``PGFLOW_DATABASE_URL``). A sample that needs another process or a real network starts
with ``# not run: <why>``; it is compiled, not run, and the page shows that line.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
NOT_RUN = re.compile(r"^# not run: (?P<why>\S.*)$", re.MULTILINE)
PYTHON_BLOCK = re.compile(r"^```python\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
INCLUDE = re.compile(r'^--8<-- "(?P<name>[\w.-]+\.py)"$')


def _not_run(path: Path) -> str | None:
    found = NOT_RUN.search(path.read_text())
    return found["why"] if found else None


@pytest.mark.parametrize("path", [p for p in EXAMPLES if not _not_run(p)], ids=lambda p: p.stem)
def test_sample_runs(path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFLOW_DATABASE_URL", db_url)
    runpy.run_path(str(path), run_name="__main__")


@pytest.mark.parametrize("path", [p for p in EXAMPLES if _not_run(p)], ids=lambda p: p.stem)
def test_sample_not_run_compiles(path: Path) -> None:
    compile(path.read_text(), str(path), "exec")


def test_not_run_samples_are_few() -> None:
    skipped = [p.name for p in EXAMPLES if _not_run(p)]
    assert len(skipped) <= 3, skipped


def test_every_python_block_is_an_included_sample() -> None:
    """No inline Python in the pages (it would not run): each block includes one sample file,
    and every sample file is shown somewhere."""
    included: set[str] = set()
    for page in sorted(DOCS.glob("*.md")):
        for block in PYTHON_BLOCK.finditer(page.read_text()):
            lines = block["body"].strip().splitlines()
            assert len(lines) == 1, f"{page.name}: inline Python block {lines[:2]}"
            match = INCLUDE.match(lines[0])
            assert match, f"{page.name}: {lines[0]!r} is not a sample include"
            assert (DOCS / "examples" / match["name"]).is_file(), f"{page.name}: {match['name']}"
            included.add(match["name"])
    assert included == {p.name for p in EXAMPLES}
