"""Making sure the database has pgmq: the extension when the server offers it, else the bundled SQL."""

from __future__ import annotations

from typing import Any

import psycopg

from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import MigrationError

__all__ = ["MIN_PGMQ", "ensure_pgmq"]

MIN_PGMQ = (1, 5)


def ensure_pgmq(conn: psycopg.Connection[Any]) -> str:
    """Install pgmq if the database lacks it; return how it is provided (for status output).

    Runs inside the caller's transaction, so a failed install leaves nothing behind.
    """
    row = conn.execute(query("migrations.pgmq_state")).fetchone()
    assert row is not None
    has_schema, ext_version, available_version = row
    if ext_version is not None:
        _require_version(ext_version)
        return f"extension {ext_version}"
    if has_schema:
        # Installed from SQL earlier (by us or by someone else): use it as it is.
        return "sql"
    if available_version is not None:
        conn.execute(query("migrations.create_pgmq_extension"))
        return f"extension {available_version}"
    from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

    conn.execute(get_embedded_install_sql())
    return f"sql {get_embedded_sql_version()}"


def _require_version(version: str) -> None:
    try:
        parsed = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return
    if parsed < MIN_PGMQ:
        raise MigrationError(
            f"pgmq extension {version} is too old: pgflow needs pgmq >= 1.5 "
            "(run ALTER EXTENSION pgmq UPDATE)"
        )
