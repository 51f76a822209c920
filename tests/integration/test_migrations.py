from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgflow_kombu.cli import cli
from pgflow_kombu.db import migrations
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import MigrationError
from tests.support.schema import snapshot
from tests.support.sql import test_query


def test_upgrade_applies_every_migration_once(empty_db_url: str) -> None:
    applied = migrations.upgrade(empty_db_url)
    assert [m.version for m in applied] == [m.version for m in migrations.available_migrations()]
    assert migrations.upgrade(empty_db_url) == []
    assert not any(s.pending for s in migrations.status(empty_db_url))


def test_step_by_step_upgrade_gives_the_same_schema_as_a_fresh_install(
    empty_db_url: str, db_url: str
) -> None:
    for migration in migrations.available_migrations():
        applied = migrations.upgrade(empty_db_url, target=migration.version)
        assert [m.version for m in applied] == [migration.version]
    assert snapshot(empty_db_url) == snapshot(db_url)


def test_concurrent_upgrades_serialise_on_the_advisory_lock(empty_db_url: str) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            results.append(len(migrations.upgrade(empty_db_url)))
        except Exception as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = len(migrations.available_migrations())
    assert sorted(results) == [0, 0, total]  # type: ignore[type-var]


def test_a_failing_migration_changes_nothing(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = migrations.Migration(9999, "broken", "CREATE TABLE pgflow_kombu.x (); SELECT 1/0;")
    real = migrations.available_migrations()
    monkeypatch.setattr(migrations, "available_migrations", lambda: (*real, broken))
    with pytest.raises(MigrationError, match="9999_broken failed: division by zero"):
        migrations.upgrade(empty_db_url)
    with connect(empty_db_url) as conn:
        row = conn.execute(test_query("namespace_exists"), {"name": "pgflow_kombu"}).fetchone()
    assert row == (False,)


def test_a_half_installed_pgflow_schema_is_refused(empty_db_url: str) -> None:
    with connect(empty_db_url) as conn:
        conn.execute(test_query("half_pgflow_schema"))
    with pytest.raises(MigrationError, match="schema pgflow exists but is incomplete"):
        migrations.upgrade(empty_db_url)
    with connect(empty_db_url) as conn:
        row = conn.execute(test_query("namespace_exists"), {"name": "pgflow_kombu"}).fetchone()
    assert row == (False,)


def test_a_migration_edited_after_it_was_applied_is_reported(db_url: str) -> None:
    with connect(db_url) as conn:
        conn.execute(test_query("tamper_checksum"))
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrations.status(db_url)


def test_a_database_from_a_newer_version_is_reported(db_url: str) -> None:
    with connect(db_url) as conn:
        conn.execute(test_query("record_future_migration"))
    with pytest.raises(MigrationError, match="upgrade pgflow-kombu"):
        migrations.upgrade(db_url)


def test_cli_db_upgrade_and_status(empty_db_url: str) -> None:
    runner = CliRunner()
    pending = runner.invoke(cli, ["--database-url", empty_db_url, "db", "status"])
    assert pending.exit_code == 1
    assert "pending" in pending.output
    upgraded = runner.invoke(cli, ["--database-url", empty_db_url, "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "applied 0001_" in upgraded.output
    done = runner.invoke(cli, ["--database-url", empty_db_url, "db", "status"])
    assert done.exit_code == 0
    assert "pending" not in done.output
