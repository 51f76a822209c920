"""psycopg's errors as ours: the one place where they are translated, by SQLSTATE.

Every module that talks to PostgreSQL re-raises psycopg errors through :func:`translate`, and
asks :func:`is_connection_error` whether a failure means the connection is gone (the worker then
reconnects, kombu retries). The translated error keeps PostgreSQL's ``sqlstate`` and diagnostics
(:class:`~pgflow_kombu.errors.Diagnostics`), so callers match on codes and fields, never on text.

Failures to *open* a connection carry no SQLSTATE (libpq reports them as text before a session
exists): :func:`connection_failure` is the only place that reads such text, to pick a hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from pgflow_kombu.db.urls import redact
from pgflow_kombu.errors import (
    ConnectionFailed,
    ConstraintViolation,
    DatabaseError,
    DataRejected,
    Diagnostics,
    PermissionDenied,
    SchemaMissing,
)

__all__ = [
    "CONNECTION_ERRORS",
    "UNDEFINED_FUNCTION",
    "UNDEFINED_TABLE",
    "UPGRADE_HINT",
    "connection_failure",
    "describe",
    "diagnostics",
    "is_connection_error",
    "translate",
    "translated_errors",
]

UNDEFINED_FUNCTION = "42883"
UNDEFINED_TABLE = "42P01"
UPGRADE_HINT = "run 'pgflow-kombu db upgrade' to install or update the schema"

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailed,)
"""The exception types that mean "the connection is gone" once errors are translated (what
kombu's ``connection_errors`` lists); :func:`is_connection_error` also judges untranslated ones."""

# Sessions the server ended (class 08 aside): shutdowns, a dropped database, session timeouts.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "25P03", "53300"})
# Objects that are missing when the schema is not installed, or older than this package.
_UNDEFINED = frozenset({UNDEFINED_TABLE, UNDEFINED_FUNCTION, "42704", "3F000"})
_OUR_SCHEMAS = ("pgflow", "pgflow_kombu")
# pgmq's queue tables come and go with their queues; only its functions belong to the schema.
_OUR_FUNCTION_SCHEMAS = (*_OUR_SCHEMAS, "pgmq")
_QUALIFIED = re.compile(r'"?([a-z_][a-z0-9_]*)"?\."?[a-z_]')
_SCHEMA_NAME = re.compile(r'schema "([^"]+)"')


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the database connection is unusable.

    Client-side failures (no SQLSTATE: the socket closed, a pool timed out), connection
    exceptions (class 08) and sessions the server ended are; an error a statement raised on a
    live connection (a constraint, a statement timeout, a missing table) is not.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionFailed):
            return True
        if isinstance(current, DatabaseError):
            return False  # already translated: its class decided
        if isinstance(current, psycopg.InterfaceError):
            return True
        if isinstance(current, psycopg.Error):
            return _connection_lost(current)
        if isinstance(current, OSError):
            return True
        current = current.__cause__
    return False


def _connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _SESSION_ENDED


def diagnostics(exc: psycopg.Error) -> Diagnostics:
    diag = exc.diag
    return Diagnostics(
        message_primary=diag.message_primary,
        message_detail=diag.message_detail,
        message_hint=diag.message_hint,
        schema_name=diag.schema_name,
        table_name=diag.table_name,
        column_name=diag.column_name,
        datatype_name=diag.datatype_name,
        constraint_name=diag.constraint_name,
        context=diag.context,
    )


def describe(exc: BaseException) -> str:
    """One line: PostgreSQL's message with its detail and hint, or the first line of the text."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        diag = exc.diag
        parts = (diag.message_primary, diag.message_detail, diag.message_hint)
        return " ".join(" ".join(p.split()) for p in parts if p)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(exc: psycopg.Error) -> DatabaseError:
    """The psycopg error a statement raised, as one of ours (chain it: ``raise ... from exc``)."""
    state, diag, text = exc.sqlstate, diagnostics(exc), describe(exc)
    if is_connection_error(exc):
        return ConnectionFailed(f"lost the database connection: {text}", sqlstate=state, diag=diag)
    if state == "42501" or (state or "").startswith("28"):
        return PermissionDenied(
            f"permission denied: {text} (grant the database user the rights it needs, or run "
            "'pgflow-kombu db upgrade' as the schema's owner)",
            sqlstate=state,
            diag=diag,
        )
    if state in _UNDEFINED and _names_our_schema(state, diag.message_primary or ""):
        return SchemaMissing(f"{text}: {UPGRADE_HINT}", sqlstate=state, diag=diag)
    if (state or "").startswith("23"):
        return ConstraintViolation(text, sqlstate=state, diag=diag)
    if (state or "").startswith("22"):
        return DataRejected(text, sqlstate=state, diag=diag)
    return DatabaseError(text, sqlstate=state, diag=diag)


def _names_our_schema(state: str, message: str) -> bool:
    if state == "3F000":
        found = _SCHEMA_NAME.search(message)
        return found is not None and found.group(1) in _OUR_FUNCTION_SCHEMAS
    qualified = _QUALIFIED.search(message)
    if qualified is None:
        return False
    schemas = _OUR_SCHEMAS if state == UNDEFINED_TABLE else _OUR_FUNCTION_SCHEMAS
    return qualified.group(1) in schemas


@contextmanager
def translated_errors() -> Iterator[None]:
    """Run a block, re-raising psycopg errors as pgflow-kombu errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


def connection_failure(url: str, exc: BaseException) -> ConnectionFailed:
    """Opening a connection to ``url`` failed: say what, where (password hidden) and what to do."""
    reason = _connect_reason(exc)
    lowered = reason.lower()
    hint = "is the server running, and is the host and port in the URL right?"
    if "role" in lowered and "does not exist" in lowered:
        hint = "check the user name in the URL (PGFLOW_DATABASE_URL or --database-url)"
    elif "database" in lowered and "does not exist" in lowered:
        hint = "create the database first, or point PGFLOW_DATABASE_URL at an existing one"
    elif "password" in lowered or "authentication" in lowered:
        hint = "check the user name and password in PGFLOW_DATABASE_URL"
    elif "resolve" in lowered or "translate host name" in lowered:
        hint = "check the host name in the URL (PGFLOW_DATABASE_URL or --database-url)"
    elif "timeout" in lowered or "timed out" in lowered:
        hint = "the connection attempt timed out: is the server reachable from here?"
    elif "too many" in lowered:
        hint = "the server has no free connection slot; retry later or raise max_connections"
    return ConnectionFailed(
        f"cannot connect to {redact(url)}: {reason}; {hint}",
        sqlstate=exc.sqlstate if isinstance(exc, psycopg.Error) else None,
    )


def _connect_reason(exc: BaseException) -> str:
    # libpq: 'connection failed: connection to server at "h", port p failed: FATAL:  <reason>'
    # and its own hint on the next line (ours replaces it); the URL already names host and port.
    text = str(exc).strip() or type(exc).__name__
    for marker in ("FATAL:", "failed:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text.strip().splitlines()[0].strip()
