"""The reference pgflow 0.8.1 (npm ``@pgflow/core``), installed at test time, never committed.

``npm install @pgflow/core@0.8.1`` into ``.reference/pgflow-core-0.8.1`` gives both the reference
SQL (``dist/supabase/migrations/*.sql``, applied in file order) and ``PgflowSqlClient`` for the Node
interop test. A database gets the reference schema on top of the pgmq SQL bundled by the ``pgmq``
PyPI package, with a ``realtime.send`` of the test's own (the reference functions call it
unconditionally): one that logs every event, or one that does nothing.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Literal

from pgmq.install import get_embedded_install_sql

from pgflow_kombu.db.connect import connect
from tests.support.databases import ensure_template
from tests.support.node import npm_project
from tests.support.sql import test_query

VERSION = "0.8.1"
NODE_PACKAGES = [f"@pgflow/core@{VERSION}", "postgres@3.4.5"]

Realtime = Literal["log", "noop"]


def node_project() -> Path:
    """Directory whose node_modules hold @pgflow/core 0.8.1 and the ``postgres`` client."""
    return npm_project(f"pgflow-core-{VERSION}", NODE_PACKAGES)


def migration_files() -> list[Path]:
    directory = node_project() / "node_modules" / "@pgflow" / "core" / "dist" / "supabase"
    files = sorted((directory / "migrations").glob("*.sql"))
    if not files:
        raise RuntimeError(f"no reference migrations in {directory}")
    return files


@cache
def migration_sql() -> str:
    """All reference migrations as one script, minus CREATE EXTENSION pgmq (pgmq comes as SQL)."""
    parts = []
    for path in migration_files():
        text = path.read_text(encoding="utf-8")
        lines = [
            line
            for line in text.splitlines()
            if not line.strip().upper().startswith('CREATE EXTENSION IF NOT EXISTS "PGMQ"')
        ]
        parts.append(f"-- {path.name}\n" + "\n".join(lines))
    return "\n".join(parts)


def install_realtime(url: str, realtime: Realtime = "log") -> None:
    """Give a database a ``realtime.send``: one logging into realtime.sent_events, or a no-op."""
    with connect(url) as conn:
        conn.execute(test_query(f"sqlcore_realtime_{realtime}"))


def install(url: str, realtime: Realtime = "log") -> None:
    """Install pgmq (bundled SQL), ``realtime.send`` and the reference pgflow schema into ``url``."""
    with connect(url, autocommit=False) as conn, conn.transaction():
        conn.execute(get_embedded_install_sql())
        conn.execute(test_query(f"sqlcore_realtime_{realtime}"))
        conn.execute(migration_sql().encode())


def template_fingerprint(realtime: Realtime) -> str:
    digest = hashlib.sha256()
    digest.update(get_embedded_install_sql().encode())
    digest.update(test_query(f"sqlcore_realtime_{realtime}").encode())
    digest.update(migration_sql().encode())
    return digest.hexdigest()[:12]


def ensure_reference_template(admin_url: str, realtime: Realtime = "log") -> str:
    """Name of a template database holding the reference schema (built once per content)."""
    fingerprint = template_fingerprint(realtime)
    name = f"pgflow_ref_tpl_{realtime}_{fingerprint}"
    ensure_template(
        admin_url, name, lambda url: install(url, realtime=realtime), fingerprint=fingerprint
    )
    return name
