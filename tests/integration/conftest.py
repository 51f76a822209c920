"""Fixtures of the SQL-core tests: the reference pgflow 0.8.1 schema next to ours."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgflow_kombu.db import migrations
from tests.reference import ensure_reference_template, install_realtime
from tests.reference.driver import Db, Pair
from tests.support.databases import clone_database, drop


@pytest.fixture(scope="session")
def reference_template(pg_admin_url: str) -> str:
    """Template database with pgmq, a logging realtime.send and the reference pgflow schema."""
    return ensure_reference_template(pg_admin_url, realtime="log")


@pytest.fixture
def reference_db_url(pg_admin_url: str, reference_template: str) -> Iterator[str]:
    """A fresh database holding the reference pgflow 0.8.1 schema (needs npm: mark tests node)."""
    url = clone_database(pg_admin_url, reference_template, prefix="r")
    yield url
    drop(pg_admin_url, url)


@pytest.fixture
def ours_with_events_url(db_url: str) -> str:
    """Our schema with the same logging realtime.send as the reference databases."""
    install_realtime(db_url, "log")
    return db_url


@pytest.fixture
def ours(ours_with_events_url: str) -> Iterator[Db]:
    db = Db(ours_with_events_url, "ours")
    yield db
    db.close()


@pytest.fixture
def reference(reference_db_url: str) -> Iterator[Db]:
    db = Db(reference_db_url, "reference")
    yield db
    db.close()


@pytest.fixture
def pair(ours: Db, reference: Db) -> Pair:
    """Our schema and the reference schema, driven in lockstep."""
    p = Pair(ours, reference)
    p.add_worker()
    return p


@pytest.fixture
def upstream_db_url(reference_db_url: str) -> str:
    """The reference (upstream) pgflow schema, adopted by our migration runner: our pgflow_kombu
    objects installed on top of it, as on a database where pgflow's own tools installed pgflow."""
    applied = migrations.upgrade(reference_db_url)
    assert 1 not in [m.version for m in applied]  # adopted, not re-installed
    return reference_db_url


@pytest.fixture(params=["ours", pytest.param("upstream", marks=pytest.mark.node)])
def any_schema_url(request: pytest.FixtureRequest) -> str:
    """Our full schema, or the upstream pgflow schema with our pgflow_kombu objects on top."""
    name = "db_url" if request.param == "ours" else "upstream_db_url"
    url: str = request.getfixturevalue(name)
    return url
