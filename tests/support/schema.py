"""A comparable snapshot of a database's schema (tables, columns, constraints, indexes, functions)."""

from __future__ import annotations

from typing import Any

import psycopg

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query

SCHEMAS = ("pgflow", "pgflow_kombu", "pgmq")


def snapshot(url: str, schemas: tuple[str, ...] = SCHEMAS) -> dict[str, list[tuple[Any, ...]]]:
    parts = ("columns", "constraints", "indexes", "functions", "triggers")
    with connect(url) as conn:
        return {part: _rows(conn, part, schemas) for part in parts}


def _rows(
    conn: psycopg.Connection[Any], part: str, schemas: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    return conn.execute(test_query(f"schema_{part}"), {"schemas": list(schemas)}).fetchall()
