from __future__ import annotations

import pytest

from pgflow_kombu.db.queries import parse_queries, query
from pgflow_kombu.db.urls import check_url, database_of, redact, to_libpq, with_database
from pgflow_kombu.errors import ConfigurationError, QueryNotFound
from pgflow_kombu.settings import Settings


def test_parse_queries_splits_on_headers_and_skips_the_preamble() -> None:
    text = "-- about this file\n-- name: one\nSELECT 1;\n\n-- name: two\nSELECT 2;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "SELECT 2;"}


def test_parse_queries_refuses_a_name_defined_twice() -> None:
    with pytest.raises(ValueError, match="'one' is defined twice"):
        parse_queries("-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;")


def test_query_loads_shipped_files_and_names_a_missing_query() -> None:
    assert "pg_advisory_xact_lock" in query("migrations.lock")
    with pytest.raises(QueryNotFound, match=r"no named query 'migrations\.nope'"):
        query("migrations.nope")


def test_urls_keep_socket_hosts_and_switch_databases() -> None:
    url = "postgresql://postgres:@/pgflow?host=/tmp/pgdata"
    assert with_database(url, "other") == "postgresql://postgres:@/other?host=/tmp/pgdata"
    assert database_of(url) == "pgflow"
    assert to_libpq("pgflow://u@h:5432/d") == "postgresql://u@h:5432/d"


@pytest.mark.parametrize("bad", ["mysql://x/y", "not a url", "postgresql://h:notaport/db"])
def test_bad_urls_are_named_in_the_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="database URL"):
        check_url(bad)


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"


def test_settings_come_from_the_environment_and_arguments_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGFLOW_DATABASE_URL", "postgresql://env@h/d")
    monkeypatch.setenv("PGFLOW_POOL_MAX_SIZE", "4")
    settings = Settings.load()
    assert settings.database_url == "postgresql://env@h/d"
    assert settings.pool_max_size == 4
    assert Settings.load(database_url="postgresql://arg@h/d").database_url == "postgresql://arg@h/d"


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFLOW_POOL_MAX_SIZE", "zero")
    with pytest.raises(ConfigurationError, match="PGFLOW_POOL_MAX_SIZE"):
        Settings.load()
