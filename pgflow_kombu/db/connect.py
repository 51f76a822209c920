"""Opening connections; their failures become a :class:`ConnectionFailed` saying what to check.

Every connection is opened here, with the parameters that make a lost peer noticed in seconds on
both sides (see :class:`~pgflow_kombu.settings.Liveness`): :func:`connection_params` builds them.
Errors are translated in :mod:`pgflow_kombu.db.errors`; ``translate`` and ``translated_errors``
are re-exported here for the modules that import them from this one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg

from pgflow_kombu.db.errors import connection_failure, describe, translate, translated_errors
from pgflow_kombu.db.urls import check_url, redact, to_libpq
from pgflow_kombu.errors import ConnectionFailed
from pgflow_kombu.settings import Liveness

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "check_client_connection",
    "connect",
    "connection_params",
    "first_line",
    "liveness",
    "poll_only",
    "translate",
    "translated_errors",
]

DEFAULT_CONNECT_TIMEOUT = 10


def liveness() -> Liveness:
    """The connection liveness settings (``PGFLOW_KEEPALIVES_IDLE``, ... or their defaults)."""
    return Liveness.load()


def poll_only(settings: Liveness | None = None) -> bool:
    """Whether connections go through a transaction pooler (``PGFLOW_POLL_ONLY``): no session
    state, and waits poll instead of listening."""
    return (settings or liveness()).poll_only


def connection_params(
    url: str,
    *,
    statement_timeout: float | None = None,
    options: str = "",
    settings: Liveness | None = None,
) -> dict[str, Any]:
    """libpq parameters for a connection to ``url``: TCP keepalives and ``tcp_user_timeout`` on
    our side, the same per-session settings on the server's side (``options``), the statement
    timeout (seconds; None or 0: none) and the caller's ``options``. Parameters the URL names
    itself win (its ``options`` come last, so its ``-c`` settings win too).

    In :func:`poll_only` mode the server gets no ``options`` (a transaction pooler refuses them,
    and a session setting would leak to whoever borrows the server connection next) and psycopg
    prepares no statement (a prepared statement lives on one server connection)."""
    live = settings or liveness()
    given = dict(parse_qsl(urlsplit(url).query))
    ours: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": live.keepalives_idle,
        "keepalives_interval": live.keepalives_interval,
        "keepalives_count": live.keepalives_count,
        "tcp_user_timeout": round(live.tcp_user_timeout * 1000),
    }
    params = {k: v for k, v in ours.items() if k not in given}
    if live.poll_only:
        return {**params, "prepare_threshold": None}
    effective = {**ours, **given}
    server: list[str] = []
    if str(effective["keepalives"]) != "0":
        server += [
            f"-c tcp_keepalives_idle={effective['keepalives_idle']}",
            f"-c tcp_keepalives_interval={effective['keepalives_interval']}",
            f"-c tcp_keepalives_count={effective['keepalives_count']}",
        ]
    server.append(f"-c tcp_user_timeout={effective['tcp_user_timeout']}")
    if statement_timeout:
        server.append(f"-c statement_timeout={round(statement_timeout * 1000)}")
    params["options"] = " ".join(part for part in (*server, options, given.get("options")) if part)
    return params


def check_client_connection(
    conn: psycopg.Connection[Any], settings: Liveness | None = None
) -> None:
    """Have the server check every ``client_connection_check_interval`` seconds, while a statement
    runs, that the client is still there (PostgreSQL >= 14; not part of the startup ``options``,
    which older servers would refuse)."""
    live = settings or liveness()
    interval = live.client_connection_check_interval
    if live.poll_only or interval <= 0 or conn.info.server_version < 140000:
        return
    if "client_connection_check_interval" in (conn.info.get_parameters().get("options") or ""):
        return  # the URL's options set it
    conn.execute(
        "SELECT set_config('client_connection_check_interval', %s, false)",
        (str(round(interval * 1000)),),
    )
    if not conn.autocommit:
        conn.commit()


def connect(
    url: str,
    *,
    autocommit: bool = True,
    statement_timeout: float | None = None,
    options: str = "",
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection to ``url`` with :func:`connection_params`; failures become a
    :class:`ConnectionFailed` saying what to check."""
    check_url(url)
    if "connect_timeout" not in urlsplit(url).query:
        kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    settings = liveness()
    params = connection_params(
        url, statement_timeout=statement_timeout, options=options, settings=settings
    )
    try:
        conn = psycopg.connect(to_libpq(url), autocommit=autocommit, **params, **kwargs)
    except psycopg.OperationalError as exc:
        raise connection_failure(url, exc) from exc
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid database URL {redact(url)!r}: {describe(exc)}") from exc
    try:
        check_client_connection(conn, settings)
    except psycopg.Error as exc:
        conn.close()
        raise connection_failure(url, exc) from exc
    return conn


def first_line(exc: BaseException) -> str:
    """One line describing ``exc`` (see :func:`pgflow_kombu.db.errors.describe`)."""
    return describe(exc)
