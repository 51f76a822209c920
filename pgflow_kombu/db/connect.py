"""Opening connections; their failures become a :class:`ConnectionFailed` saying what to check.

Errors are translated in :mod:`pgflow_kombu.db.errors`; ``translate`` and ``translated_errors``
are re-exported here for the modules that import them from this one.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgflow_kombu.db.errors import connection_failure, describe, translate, translated_errors
from pgflow_kombu.db.urls import check_url, redact, to_libpq
from pgflow_kombu.errors import ConnectionFailed

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "connect",
    "first_line",
    "translate",
    "translated_errors",
]

DEFAULT_CONNECT_TIMEOUT = 10


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection to ``url``; failures become a :class:`ConnectionFailed` saying what to check."""
    check_url(url)
    kwargs.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    try:
        return psycopg.connect(to_libpq(url), autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise connection_failure(url, exc) from exc
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid database URL {redact(url)!r}: {describe(exc)}") from exc


def first_line(exc: BaseException) -> str:
    """One line describing ``exc`` (see :func:`pgflow_kombu.db.errors.describe`)."""
    return describe(exc)
