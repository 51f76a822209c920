"""Server-level helpers: create, clone and drop databases (embedded server, test templates)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgflow_kombu.db.queries import query

__all__ = ["create_database", "database_exists", "drop_database"]


def database_exists(conn: psycopg.Connection[Any], dbname: str) -> bool:
    row = conn.execute(query("admin.database_exists"), {"dbname": dbname}).fetchone()
    return bool(row and row[0])


def create_database(
    conn: psycopg.Connection[Any], dbname: str, *, template: str | None = None
) -> None:
    if template is None:
        conn.execute(sql.SQL(query("admin.create_database")).format(sql.Identifier(dbname)))
    else:
        conn.execute(
            sql.SQL(query("admin.create_database_from_template")).format(
                sql.Identifier(dbname), sql.Identifier(template)
            )
        )


def drop_database(conn: psycopg.Connection[Any], dbname: str) -> None:
    conn.execute(sql.SQL(query("admin.drop_database")).format(sql.Identifier(dbname)))
