"""Schema migrations: ordered ``sql/migrations/NNNN_name.sql`` files applied once each.

``upgrade`` runs in one transaction under an advisory lock, so two processes upgrading at once are
safe (the second waits, then finds nothing to do) and a failure leaves the database as it was.
Migration 1 is the pgflow 0.8.1 schema: on a database where upstream pgflow already installed that
schema, it is *adopted* (recorded, not run) and only our own migrations are applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import psycopg

from pgflow_kombu.db.connect import connect, first_line, translate
from pgflow_kombu.db.pgmq_setup import ensure_pgmq
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.sql_files import sql_root
from pgflow_kombu.errors import MigrationError, PgFlowError

__all__ = [
    "PGFLOW_SCHEMA_VERSION",
    "Migration",
    "MigrationState",
    "available_migrations",
    "pending",
    "schema_fingerprint",
    "status",
    "upgrade",
]

PGFLOW_SCHEMA_VERSION = 1
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None
    how: str | None  # 'applied', 'adopted' or None when pending

    @property
    def pending(self) -> bool:
        return self.applied_at is None


@cache
def available_migrations() -> tuple[Migration, ...]:
    found = []
    for path in sorted((sql_root() / "migrations").glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {sql_root() / 'migrations'}")
    return tuple(found)


def schema_fingerprint() -> str:
    """A hash of every migration: changes whenever the schema the code expects changes."""
    digest = hashlib.sha256()
    for migration in available_migrations():
        digest.update(f"{migration.version}:{migration.checksum};".encode())
    return digest.hexdigest()[:12]


def upgrade(url: str, *, target: int | None = None) -> list[Migration]:
    """Bring the database at ``url`` up to date (or up to version ``target``).

    Returns the migrations that were applied (an adopted upstream schema is not among them).
    """
    with connect(url, autocommit=False) as conn:
        try:
            with conn.transaction():
                conn.execute(query("migrations.lock"))
                conn.execute(query("migrations.create_migrations_table"))
                ensure_pgmq(conn)
                recorded = _recorded(conn)
                _check_recorded(recorded)
                applied = []
                for migration in available_migrations():
                    if migration.version in recorded:
                        continue
                    if target is not None and migration.version > target:
                        break
                    how = _apply(conn, migration)
                    conn.execute(
                        query("migrations.record"),
                        {
                            "version": migration.version,
                            "name": migration.name,
                            "checksum": migration.checksum,
                            "how": how,
                        },
                    )
                    if how == "applied":
                        applied.append(migration)
                return applied
        except PgFlowError:
            raise
        except psycopg.Error as exc:
            raise translate(exc) from exc


def status(url: str) -> list[MigrationState]:
    """Every known migration with when it was applied (None when pending)."""
    with connect(url) as conn:
        try:
            exists = conn.execute(query("migrations.migrations_table_exists")).fetchone()
            recorded = _recorded(conn) if exists and exists[0] else {}
        except psycopg.Error as exc:
            raise translate(exc) from exc
    _check_recorded(recorded)
    return [
        MigrationState(
            m.version,
            m.name,
            recorded[m.version][2] if m.version in recorded else None,
            recorded[m.version][1] if m.version in recorded else None,
        )
        for m in available_migrations()
    ]


def pending(url: str) -> list[Migration]:
    states = {s.version for s in status(url) if s.pending}
    return [m for m in available_migrations() if m.version in states]


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str, datetime]]:
    rows = conn.execute(query("migrations.recorded")).fetchall()
    return {version: (checksum, how, at) for version, _name, checksum, how, at in rows}


def _check_recorded(recorded: dict[int, tuple[str, str, datetime]]) -> None:
    known = {m.version: m for m in available_migrations()}
    newer = sorted(set(recorded) - set(known))
    if newer:
        raise MigrationError(
            f"the database has migrations {newer} that this pgflow-kombu does not know: "
            "it was upgraded by a newer version; upgrade pgflow-kombu"
        )
    for version, (checksum, how, _at) in recorded.items():
        if how == "applied" and known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{known[version].name} changed after it was applied "
                "(checksum differs): restore the file, or add a new migration instead"
            )


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> str:
    if migration.version == PGFLOW_SCHEMA_VERSION and _adopt_upstream_schema(conn):
        return "adopted"
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())
    except psycopg.errors.InsufficientPrivilege:
        raise
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} failed: {first_line(exc)}; "
            "nothing was changed"
        ) from exc
    return "applied"


def _adopt_upstream_schema(conn: psycopg.Connection[Any]) -> bool:
    """True when a complete pgflow 0.8.1 schema is already there (installed by upstream pgflow)."""
    row = conn.execute(query("migrations.pgflow_objects")).fetchone()
    assert row is not None
    has_schema, missing_tables, missing_functions, has_map_steps = row
    if not has_schema:
        return False
    if missing_tables or missing_functions:
        missing = ", ".join([*missing_tables, *(f"{f}()" for f in missing_functions)])
        raise MigrationError(
            f"schema pgflow exists but is incomplete (missing: {missing}); it looks half-installed: "
            "finish or drop it before running 'pgflow-kombu db upgrade'"
        )
    if not has_map_steps:
        raise MigrationError(
            "schema pgflow is older than 0.8.1 (no map steps): upgrade it with pgflow's own "
            "migrations first"
        )
    return True
