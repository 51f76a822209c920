"""The CLI's answers to a bad environment: one line on stderr, a non-zero exit, nothing half-done."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "pgflow_kombu", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


def test_bad_url() -> None:
    result = run_cli("--database-url", "mysql://root@localhost/db", "db", "upgrade")
    assert_one_line_error(result, "must start with postgresql://")


def test_unreachable_server() -> None:
    result = run_cli("--database-url", "postgresql://postgres@127.0.0.1:1/x", "db", "upgrade")
    assert_one_line_error(result, "is the server running")


def test_missing_database(empty_db_url: str) -> None:
    from pgflow_kombu.db.urls import with_database

    result = run_cli("--database-url", with_database(empty_db_url, "no_such_db_x"), "db", "status")
    assert_one_line_error(result, "create the database first")


@pytest.fixture
def unprivileged_url(empty_db_url: str) -> Iterator[str]:
    role = f"limited_{uuid.uuid4().hex[:8]}"
    with connect(empty_db_url) as conn:
        conn.execute(sql.SQL(test_query("create_limited_role")).format(sql.Identifier(role)))
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(empty_db_url)
    host_part = parts.netloc.split("@", 1)[-1]
    yield urlunsplit(parts._replace(netloc=f"{role}@{host_part}"))
    with connect(empty_db_url) as conn:
        conn.execute(sql.SQL(test_query("drop_role")).format(sql.Identifier(role)))


def test_database_without_rights(empty_db_url: str, unprivileged_url: str) -> None:
    result = run_cli("--database-url", unprivileged_url, "db", "upgrade")
    assert_one_line_error(result, "permission denied")
    with connect(empty_db_url) as conn:
        row = conn.execute(test_query("namespace_exists"), {"name": "pgflow_kombu"}).fetchone()
    assert row == (False,)


def test_half_installed_schema(empty_db_url: str) -> None:
    with connect(empty_db_url) as conn:
        conn.execute(test_query("half_pgflow_schema"))
    result = run_cli("--database-url", empty_db_url, "db", "upgrade")
    assert_one_line_error(result, "incomplete")
