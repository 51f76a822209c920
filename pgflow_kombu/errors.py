"""The one exception hierarchy of pgflow-kombu.

Everything the package raises on purpose derives from :class:`PgFlowError`; psycopg errors are
translated at the ``db/`` boundary so callers never need to import psycopg to handle failures.
"""

from __future__ import annotations


class PgFlowError(Exception):
    """Base class of every error raised by pgflow-kombu."""


class ConfigurationError(PgFlowError):
    """Settings are missing or malformed (a bad URL, an unknown option)."""


class DatabaseError(PgFlowError):
    """The database refused or failed an operation."""


class ConnectionFailed(DatabaseError):
    """The server could not be reached or refused the connection."""


class PermissionDenied(DatabaseError):
    """The database user lacks a privilege the operation needs."""


class MigrationError(DatabaseError):
    """The schema could not be brought up to date, or is in a state we do not recognise."""


class QueryNotFound(PgFlowError):
    """A named query was asked for that no .sql file defines."""
