"""Broker URLs for the test databases (``db_url`` of tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pgflow_kombu.transport.urls import kombu_url


def broker_url(db_url: str) -> str:
    """The broker URL of a test database, libpq query parameters included: ``pgflow://``, or
    ``pgflow+postgresql://`` when there are query parameters (kombu refuses them otherwise)."""
    return kombu_url(db_url)


def parsed_broker_url(db_url: str) -> str:
    """A ``pgflow://`` URL of the same database that kombu splits into parts, with no query.

    kombu parses alternate URLs itself on failover, refusing query parameters and lower-casing the
    host; a Unix socket directory therefore goes in the host part, percent-encoded, through a
    lower-case symlink when its path has capitals.
    """
    parts = urlsplit(db_url)
    query = dict(parse_qsl(parts.query))
    socket_dir = query.pop("host", None)
    if socket_dir is None:
        return urlunsplit(parts._replace(scheme="pgflow"))
    if socket_dir != socket_dir.lower():
        socket_dir = _lowercase_alias(socket_dir)
    user = parts.username or "postgres"
    auth = user + (f":{parts.password}" if parts.password else "")
    netloc = f"{auth}@{quote(socket_dir, safe='')}:{parts.port or 5432}"
    return urlunsplit(("pgflow", netloc, parts.path, "", ""))


def _lowercase_alias(directory: str) -> str:
    alias = Path("/tmp") / f"pgflow-kombu-sock-{os.getuid()}"
    if not (alias.is_symlink() and os.readlink(alias) == directory):
        if alias.is_symlink() or alias.exists():
            alias.unlink()
        alias.symlink_to(directory)
    return str(alias)
