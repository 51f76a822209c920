"""psycopg errors become ours in one place, by SQLSTATE, keeping PostgreSQL's diagnostics."""

from __future__ import annotations

import pickle
from typing import Any

import psycopg
import pytest

from pgflow_kombu.db.errors import is_connection_error, translate, translated_errors
from pgflow_kombu.errors import (
    ConnectionFailed,
    ConstraintViolation,
    DatabaseError,
    DataRejected,
    SchemaMissing,
)
from pgflow_kombu.worker.link import Link
from tests.support.sql import test_query


def failure(conn: psycopg.Connection[Any], name: str) -> DatabaseError:
    with pytest.raises(DatabaseError) as caught, translated_errors():
        conn.execute(test_query(name))
    return caught.value


def test_a_unique_violation_keeps_its_constraint(conn: psycopg.Connection[Any]) -> None:
    error = failure(conn, "err_unique")
    assert type(error) is ConstraintViolation
    assert error.sqlstate == "23505"
    assert error.diag.constraint_name == "flows_pkey"
    assert error.diag.table_name == "flows"
    # the detail line is kept: it names the value
    assert "dup_flow" in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("name", ["err_out_of_range", "err_bad_json"])
def test_a_refused_value_is_data_rejected(conn: psycopg.Connection[Any], name: str) -> None:
    error = failure(conn, name)
    assert type(error) is DataRejected
    assert error.sqlstate is not None and error.sqlstate.startswith("22")
    assert not is_connection_error(error)


@pytest.mark.parametrize("name", ["err_missing_pgflow_table", "err_missing_pgflow_kombu_function"])
def test_our_missing_objects_say_to_upgrade(conn: psycopg.Connection[Any], name: str) -> None:
    error = failure(conn, name)
    assert type(error) is SchemaMissing
    assert "pgflow-kombu db upgrade" in str(error)


def test_a_missing_table_elsewhere_is_not_our_schema(conn: psycopg.Connection[Any]) -> None:
    error = failure(conn, "err_missing_other_table")
    assert type(error) is DatabaseError
    assert error.sqlstate == "42P01"


def test_detail_and_hint_stay_on_one_line(conn: psycopg.Connection[Any]) -> None:
    error = failure(conn, "err_raise_with_detail")
    assert str(error) == "first line some detail a hint"
    assert error.diag.message_detail == "some detail"
    assert error.diag.message_hint == "a hint"
    assert error.sqlstate == "P0001"


def test_a_statement_timeout_is_not_a_lost_connection(conn: psycopg.Connection[Any]) -> None:
    conn.execute(test_query("err_set_statement_timeout"))
    with pytest.raises(psycopg.Error) as raw:
        conn.execute(test_query("err_statement_timeout"))
    assert not is_connection_error(raw.value)
    translated = translate(raw.value)
    assert type(translated) is DatabaseError and translated.sqlstate == "57014"
    assert not conn.broken  # the connection is still good


def test_a_terminated_session_is_a_lost_connection(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as raw:
        conn.execute(test_query("err_terminate_self"))
    assert is_connection_error(raw.value)
    assert isinstance(translate(raw.value), ConnectionFailed)


def test_errors_survive_pickling(conn: psycopg.Connection[Any]) -> None:
    error = failure(conn, "err_unique")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ConstraintViolation
    assert (str(copy), copy.sqlstate, copy.diag) == (str(error), error.sqlstate, error.diag)


def test_the_worker_link_reconnects_only_after_a_lost_connection(db_url: str) -> None:
    link = Link(db_url)
    try:
        with pytest.raises(ConstraintViolation):
            link.fetch(test_query("err_unique"))
        assert link.connected  # a statement error keeps the connection
        with pytest.raises(ConnectionFailed):
            link.fetch(test_query("err_terminate_self"))
        assert not link.connected
        assert link.fetch("SELECT 1") == [(1,)]
    finally:
        link.close()
