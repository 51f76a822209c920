"""One database connection of the worker that reopens itself after a failure.

Each of the worker's threads (claims, reports, heartbeats) owns one :class:`Link`. A statement
that fails because the server went away raises :class:`~pgflow_kombu.errors.ConnectionFailed`
after closing the connection; the next call reconnects. Callers decide whether to retry.
Its statements are cancelled after ``statement_timeout`` seconds, and each outcome is told to the
worker's :class:`~pgflow_kombu.worker.connectivity.Connectivity` (which logs losses).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, ClassVar

import psycopg
from typing_extensions import LiteralString

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.errors import is_connection_error, translate
from pgflow_kombu.errors import ConnectionFailed, PgFlowError
from pgflow_kombu.worker.connectivity import Connectivity

__all__ = ["Link", "is_connection_error"]


class Link:
    # Connections of this process opened again after one was lost (the reconnects metric).
    reconnects: ClassVar[int] = 0

    def __init__(
        self,
        url: str,
        *,
        application_name: str = "pgflow-kombu-worker",
        synchronous_commit: bool = True,
        statement_timeout: float | None = None,
        connectivity: Connectivity | None = None,
    ) -> None:
        self.url = url
        self.application_name = application_name
        self.synchronous_commit = synchronous_commit
        self.statement_timeout = statement_timeout
        self.connectivity = connectivity
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._lost = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            options = "" if self.synchronous_commit else "-c synchronous_commit=off"
            self._conn = connect(
                self.url,
                application_name=self.application_name,
                options=options,
                statement_timeout=self.statement_timeout,
            )
            if self._lost:
                self._lost = False
                Link.reconnects += 1
        return self._conn

    def fetch(self, sql: LiteralString, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement (its own transaction) and return its rows."""
        sent_at = time.monotonic()
        try:
            rows = self._fetch(sql, params)
        except ConnectionFailed as exc:
            if self.connectivity is not None:
                self.connectivity.failed(sent_at, exc)
            raise
        if self.connectivity is not None:
            self.connectivity.succeeded()
        return rows

    def _fetch(self, sql: LiteralString, params: dict[str, Any] | None = None) -> list[Any]:
        with self._lock:
            try:
                conn = self._connection()
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
            except PgFlowError as exc:
                self._drop()
                self._lost = self._lost or is_connection_error(exc)
                raise
            except psycopg.Error as exc:
                if is_connection_error(exc):
                    self._drop()
                    self._lost = True
                raise translate(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
