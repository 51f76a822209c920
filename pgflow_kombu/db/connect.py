"""Opening connections, and translating psycopg's errors into ours at this boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from pgflow_kombu.db.urls import check_url, redact, to_libpq
from pgflow_kombu.errors import (
    ConnectionFailed,
    DatabaseError,
    PermissionDenied,
    PgFlowError,
)

DEFAULT_CONNECT_TIMEOUT = 10


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection to ``url``; failures become a :class:`ConnectionFailed` saying what to check."""
    check_url(url)
    kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    try:
        return psycopg.connect(to_libpq(url), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(connection_failure_message(url, exc)) from exc
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid database URL {redact(url)!r}: {first_line(exc)}") from exc


def connection_failure_message(url: str, exc: BaseException) -> str:
    reason = first_line(exc)
    hint = "is the server running and is PGFLOW_DATABASE_URL right?"
    if "does not exist" in reason:
        hint = "create the database first, or point PGFLOW_DATABASE_URL at an existing one"
    elif "password" in reason or "authentication" in reason:
        hint = "check the user name and password in PGFLOW_DATABASE_URL"
    return f"cannot connect to {redact(url)}: {reason} ({hint})"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(exc: psycopg.Error) -> PgFlowError:
    """Map a psycopg error raised by a statement onto our hierarchy."""
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return PermissionDenied(
            f"permission denied: {first_line(exc)} (the database user needs the rights to "
            "create schemas and functions, or run 'pgflow-kombu db upgrade' as an owner)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return ConnectionFailed(f"lost the database connection: {first_line(exc)}")
    return DatabaseError(first_line(exc))


@contextmanager
def translated_errors() -> Iterator[None]:
    """Run a block, re-raising psycopg errors as pgflow-kombu errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
