"""Named queries used only by the tests (tests/sql/*.sql), loaded like the package's own."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from typing_extensions import LiteralString

from pgflow_kombu.db.queries import parse_queries

_DIR = Path(__file__).resolve().parent.parent / "sql"


@cache
def _queries() -> dict[str, LiteralString]:
    found: dict[str, LiteralString] = {}
    for path in sorted(_DIR.glob("*.sql")):
        for name, body in parse_queries(path.read_text()).items():
            found[name] = body
    return found


def test_query(name: str) -> LiteralString:
    return _queries()[name]


test_query.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
