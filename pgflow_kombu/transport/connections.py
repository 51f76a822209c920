"""Database connections of one kombu connection: a small pool.

A transport keeps two pools: *durable* connections (publishes, declarations) always wait for the
commit to reach disk; *consumer* connections (reads, acks, requeues, visibility changes) commit
asynchronously unless the ``durable_acks`` option says otherwise. Losing such a commit in a server
crash only makes a message visible again, which at-least-once delivery allows; a published
message is never at risk.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import Any

import psycopg

from pgflow_kombu.db.connect import connect, liveness

__all__ = ["Connection", "Pool", "close_quietly", "is_usable"]

Connection = psycopg.Connection[Any]


def is_usable(conn: Connection) -> bool:
    return not conn.closed and not conn.broken


class Pool:
    """Idle connections kept for reuse by the channels of one transport (thread-safe)."""

    def __init__(
        self,
        url: str,
        *,
        size: int,
        connect_timeout: float,
        application_name: str,
        consumer: bool,
        durable_acks: bool,
    ) -> None:
        self.url = url
        self.size = size
        self._kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": application_name,
            # A lost server fails statements within seconds (keepalives, tcp_user_timeout: see
            # db/connect.py), which kombu's connection_errors path turns into a reconnection.
            "statement_timeout": liveness().statement_timeout or None,
        }
        if consumer:
            # Only queue statements run here; they want an index whatever the table looked like
            # when psycopg prepared them (a queue can grow from empty to a backlog).
            options = "-c enable_seqscan=off"
            if not durable_acks:
                options += " -c synchronous_commit=off"
            self._kwargs["options"] = options
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return connect(self.url, autocommit=True, **self._kwargs)
            if is_usable(conn):
                return conn
            _close_quietly(conn)

    def put(self, conn: Connection) -> None:
        if is_usable(conn) and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self._lock:
                if not self._closed and len(self._idle) < self.size:
                    self._idle.append(conn)
                    return
        _close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Connection) -> None:
    with suppress(Exception):
        conn.close()


def close_quietly(conn: Connection) -> None:
    _close_quietly(conn)
