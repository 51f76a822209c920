"""kombu splits ``pgflow://`` URLs into connection fields; the transport rebuilds libpq URLs."""

from __future__ import annotations

import kombu
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgflow_kombu  # noqa: F401 - registers the pgflow:// alias
from pgflow_kombu.db.urls import to_libpq
from pgflow_kombu.transport.urls import kombu_url, url_from_client


def libpq(conn: kombu.Connection) -> dict[str, str | int | None]:
    """What libpq makes of the URL the transport builds for ``conn``."""
    return conninfo_to_dict(to_libpq(url_from_client(conn)))


def test_kombu_sees_every_part_of_a_pgflow_url() -> None:
    conn = kombu.Connection("pgflow://app:p%40ss@db.example:5433/flows")
    assert (conn.hostname, conn.port, conn.userid, conn.password, conn.virtual_host) == (
        "db.example",
        5433,
        "app",
        "p@ss",
        "flows",
    )
    assert conn.transport_cls == "pgflow"
    assert url_from_client(conn) == "pgflow://app:p%40ss@db.example:5433/flows"
    assert libpq(conn) == {
        "host": "db.example",
        "port": "5433",
        "user": "app",
        "password": "p@ss",
        "dbname": "flows",
    }
    assert conn.as_uri() == "pgflow://app:**@db.example:5433/flows"


def test_unix_socket_directory_in_the_host_part() -> None:
    conn = kombu.Connection("pgflow://postgres@%2Frun%2Fpostgresql:5432/flows")
    assert conn.hostname == "/run/postgresql"
    assert libpq(conn) == {
        "host": "/run/postgresql",
        "port": "5432",
        "user": "postgres",
        "dbname": "flows",
    }


def test_ipv6_host_and_missing_parts() -> None:
    assert libpq(kombu.Connection("pgflow://u@[::1]:6000/d")) == {
        "host": "::1",
        "port": "6000",
        "user": "u",
        "dbname": "d",
    }
    # No host, no port, no database: libpq's defaults, as for the same postgresql:// URL.
    assert libpq(kombu.Connection("pgflow://postgres@")) == {"user": "postgres"}


def test_libpq_parameters_travel_whole_after_the_plus() -> None:
    url = "pgflow+postgresql://postgres:secret@/flows?host=/Data/Sock&sslmode=disable"
    conn = kombu.Connection(url)
    assert conn.transport_cls == "pgflow"
    assert url_from_client(conn) == url.removeprefix("pgflow+")
    assert libpq(conn) == {
        "host": "/Data/Sock",  # not lower-cased, as kombu does to the host part
        "user": "postgres",
        "password": "secret",
        "dbname": "flows",
        "sslmode": "disable",
    }
    assert "secret" not in conn.as_uri()


def test_kombu_refuses_query_parameters_on_a_plain_pgflow_url() -> None:
    # Why kombu_url() moves such URLs behind "pgflow+": kombu makes each parameter a keyword.
    with pytest.raises(TypeError, match="host"):
        kombu.Connection("pgflow://postgres@/flows?host=/run/postgresql")


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "pgflow://u:p@h:5432/d"),
        ("postgres://u@h/d", "pgflow://u@h/d"),
        ("postgresql://u@/d?host=/tmp/x", "pgflow+postgresql://u@/d?host=/tmp/x"),
    ],
)
def test_kombu_url(database_url: str, expected: str) -> None:
    assert kombu_url(database_url) == expected
    assert conninfo_to_dict(to_libpq(url_from_client(kombu.Connection(expected)))) == (
        conninfo_to_dict(to_libpq(database_url))
    )


def test_failover_rebuilds_the_url_of_the_alternate() -> None:
    conn = kombu.Connection("pgflow://u@dead:1/d;pgflow://v:pw@live:5433/e")
    assert (conn.hostname, conn.port) == ("dead", 1)
    conn.maybe_switch_next()
    assert (conn.hostname, conn.port, conn.userid) == ("live", 5433, "v")
    assert url_from_client(conn) == "pgflow://v:pw@live:5433/e"
