"""Shared fixtures.

The suite runs against the embedded PostgreSQL (started in ``.pgdata`` of the checkout) unless
``PGFLOW_TEST_DATABASE_URL`` names a server (any database on it; tests create their own).
Each integration test gets a fresh database cloned from a template that holds our schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgflow_kombu.db import embedded, migrations
from pgflow_kombu.db.connect import connect
from tests.support.databases import (
    clone_database,
    drop,
    ensure_template,
    raise_max_connections,
)

ROOT = Path(__file__).resolve().parent.parent
# Parallel test processes (pytest -n) share one server; several tests that each run four workers
# at once outgrow the embedded server's default of 100 connections.
PARALLEL_MAX_CONNECTIONS = 400


def _embedded_url() -> str:
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before pytest-xdist starts its test processes: give the embedded server room for them all
    (a restart, once per data directory: the setting is kept)."""
    config = session.config
    if hasattr(config, "workerinput") or os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return
    if not config.getoption("numprocesses", None):  # -n; None without pytest-xdist
        return
    if raise_max_connections(_embedded_url(), PARALLEL_MAX_CONNECTIONS):
        embedded.stop()
        _embedded_url()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, the rest in its order: in parallel runs (pytest -n) a long test then
    overlaps many short ones instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """URL of a server where tests may create databases."""
    return os.environ.get("PGFLOW_TEST_DATABASE_URL") or _embedded_url()


@pytest.fixture(scope="session")
def schema_template(pg_admin_url: str) -> str:
    """Name of the template database holding our full schema (rebuilt when the SQL changes)."""
    fingerprint = migrations.schema_fingerprint()
    name = f"pgflow_kombu_tpl_{fingerprint}"
    ensure_template(pg_admin_url, name, migrations.upgrade, fingerprint=fingerprint)
    return name


@pytest.fixture
def db_url(pg_admin_url: str, schema_template: str) -> Iterator[str]:
    """A fresh database with our schema, dropped after the test."""
    url = clone_database(pg_admin_url, schema_template, prefix="t")
    yield url
    drop(pg_admin_url, url)


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with nothing installed (for migration tests)."""
    url = clone_database(pg_admin_url, "template0", prefix="e")
    yield url
    drop(pg_admin_url, url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test's database."""
    with connect(db_url) as connection:
        yield connection
