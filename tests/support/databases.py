"""Template databases for the test suite: build a schema once, clone it per test (fast, real)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from psycopg import sql

from pgflow_kombu.db.admin import create_database, database_exists, drop_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import with_database
from tests.support.sql import test_query


def ensure_template(
    admin_url: str, name: str, build: Callable[[str], object], *, fingerprint: str
) -> None:
    """Make sure template database ``name`` exists and was built from ``fingerprint``.

    ``build`` receives the URL of the new, empty database and installs whatever it needs. A template
    whose stored fingerprint differs (the schema files changed) is rebuilt. A server-wide advisory
    lock keeps concurrent test processes from building the same template twice.
    """
    with connect(admin_url) as conn:
        conn.execute(query("admin.server_lock"), {"key": f"template:{name}"})
        try:
            if database_exists(conn, name):
                row = conn.execute(query("admin.database_comment"), {"dbname": name}).fetchone()
                if row and row[0] == fingerprint:
                    return
                conn.execute(sql.SQL(query("admin.unmark_template")).format(sql.Identifier(name)))
                drop_database(conn, name)
            create_database(conn, name)
            try:
                build(with_database(admin_url, name))
            except BaseException:
                drop_database(conn, name)
                raise
            ident = sql.Identifier(name)
            conn.execute(
                sql.SQL(query("admin.comment_on_database")).format(ident, sql.Literal(fingerprint))
            )
            conn.execute(sql.SQL(query("admin.mark_template")).format(ident))
        finally:
            conn.execute(query("admin.server_unlock"), {"key": f"template:{name}"})


def clone_database(admin_url: str, template: str, prefix: str = "t") -> str:
    """Create a fresh database from ``template``; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(admin_url) as conn:
        create_database(conn, name, template=template)
    return with_database(admin_url, name)


def drop(admin_url: str, url: str) -> None:
    from pgflow_kombu.db.urls import database_of

    with connect(admin_url) as conn:
        drop_database(conn, database_of(url))


def raise_max_connections(admin_url: str, at_least: int) -> bool:
    """Configure the server to allow ``at_least`` connections; True when it needs a restart."""
    with connect(admin_url) as conn:
        row = conn.execute(test_query("max_connections")).fetchone()
        if row is not None and row[0] >= at_least:
            return False
        conn.execute(sql.SQL(test_query("set_max_connections")).format(sql.Literal(at_least)))
    return True
