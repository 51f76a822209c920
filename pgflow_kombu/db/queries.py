"""Named queries, loaded once from ``sql/queries/*.sql``.

A file holds several queries, each introduced by a header line ``-- name: <query_name>``; the query
``q`` of ``worker.sql`` is addressed as ``"worker.q"``. Lines before the first header are ignored, so a
file may open with comments about the group.
"""

from __future__ import annotations

import re
from functools import cache

from typing_extensions import LiteralString

from pgflow_kombu.db.sql_files import sql_root
from pgflow_kombu.errors import QueryNotFound

__all__ = ["parse_queries", "query"]

_HEADER = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split one .sql file into its named queries (exposed for tests)."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def _all_queries() -> dict[str, LiteralString]:
    found: dict[str, LiteralString] = {}
    for path in sorted((sql_root() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text(encoding="utf-8")).items():
            found[f"{path.stem}.{name}"] = body
    return found


def query(name: str) -> LiteralString:
    """Return the SQL text of the named query ``"<group>.<name>"``."""
    try:
        # The text comes from files shipped with the package, never from user input.
        return _all_queries()[name]
    except KeyError:
        raise QueryNotFound(f"no named query {name!r} in {sql_root() / 'queries'}") from None
