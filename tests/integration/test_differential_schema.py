"""Our pgflow schema is the reference pgflow 0.8.1 schema: tables, columns, defaults, constraints,
indexes, composite types and function signatures (name, arguments with defaults, result,
SECURITY DEFINER, volatility) compare equal in the catalogs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.reference.driver import Db

pytestmark = pytest.mark.node

PARTS = ("columns", "constraints", "indexes", "types", "functions")


@pytest.mark.parametrize("part", PARTS)
def test_catalogs_match(ours: Db, reference: Db, part: str) -> None:
    query = f"sqlcore_schema_{part}"
    ours_rows: list[dict[str, Any]] = ours.execute(query)
    reference_rows: list[dict[str, Any]] = reference.execute(query)
    assert ours_rows, f"no {part} found"
    missing = [r for r in reference_rows if r not in ours_rows]
    extra = [r for r in ours_rows if r not in reference_rows]
    assert (missing, extra) == ([], [])
