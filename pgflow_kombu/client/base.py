"""The client's foundation: the URL, the connection pool and how a connection is lent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pgflow_kombu.db.connect import (
    DEFAULT_CONNECT_TIMEOUT,
    check_client_connection,
    connect,
    connection_params,
    liveness,
)
from pgflow_kombu.db.errors import translate
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import check_url, redact, to_libpq
from pgflow_kombu.errors import ConnectionFailed, PgFlowError
from pgflow_kombu.waiting import RunListener

__all__ = ["CORE_VERSION", "POOL_TIMEOUT", "ClientBase", "FlowRef", "HasSlug", "flow_slug_of"]

POOL_TIMEOUT = 30.0
"""Seconds to wait for a free pooled connection (psycopg_pool's default)."""

CORE_VERSION = "0.8.1"
"""The pgflow core (database schema and SQL functions) this package is compatible with."""


class HasSlug(Protocol):
    @property
    def slug(self) -> str: ...


FlowRef = str | HasSlug


def flow_slug_of(flow: FlowRef) -> str:
    return flow if isinstance(flow, str) else flow.slug


class ClientBase:
    """What every part of the :class:`~pgflow_kombu.client.Client` shares: one database URL,
    a connection pool opened on first use (thread-safe), and the run-finished listener."""

    run_control: ClassVar[bool] = False
    """Whether the client offers the run control API (``retry_run``, ``delete_run``,
    ``cancel_run``): the dashboard shows its buttons only then. A subclass withholding it from
    the dashboard sets False."""

    def __init__(
        self,
        url: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        poll_interval: float = 0.5,
    ) -> None:
        self.url = check_url(url)
        self.poll_interval = poll_interval
        self._pool = ConnectionPool(
            to_libpq(url),
            min_size=pool_min_size,
            max_size=pool_max_size,
            kwargs={
                "autocommit": True,
                "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
                **connection_params(url, statement_timeout=liveness().statement_timeout or None),
            },
            configure=check_client_connection,
            open=False,
            name="pgflow-client",
        )
        self._opened = False
        self._listener = RunListener(url)

    def close(self) -> None:
        self._listener.close()
        if self._opened:
            self._pool.close()
            self._opened = False

    @contextmanager
    def connection(self, given: psycopg.Connection[Any] | None = None) -> Iterator[Any]:
        """A connection: the caller's (inside their transaction) or one from the pool."""
        try:
            if given is not None:
                yield given
                return
            if not self._opened:
                self._open_pool()
            with self._pool.connection(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except PgFlowError:
            raise
        except PoolTimeout as exc:
            raise ConnectionFailed(
                f"no connection to {redact(self.url)} became free within {POOL_TIMEOUT:g} s "
                f"(all {self._pool.max_size} in use, or the server stopped answering): raise "
                "pool_max_size or check the server"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _open_pool(self) -> None:
        # One direct connection first: a wrong URL or a server that is down fails at once with
        # what was wrong, instead of the pool retrying in the background until its timeout.
        connect(self.url).close()
        self._pool.open(wait=True, timeout=DEFAULT_CONNECT_TIMEOUT)
        self._opened = True

    def flow_exists(self, slug: str) -> bool:
        with self.connection() as conn:
            row = conn.execute(query("client.flow_exists"), {"flow_slug": slug}).fetchone()
        return bool(row and row[0])
