"""Database connections of one kombu connection: URL, a small pool, error translation.

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
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg

from pgflow_kombu.db.connect import connect, liveness

Connection = psycopg.Connection[Any]


def url_from_client(client: Any) -> str:
    """The database URL a ``kombu.Connection`` stands for.

    kombu hands over the URL untouched (the transport parses its own URLs, so that libpq query
    parameters such as ``?host=/socket/dir`` survive), except after a failover switch, when it has
    split the URL into host, port, user, password and virtual host.
    """
    hostname = client.hostname or ""
    if "://" in hostname:
        return str(hostname)
    user = quote(client.userid or "", safe="")
    password = quote(client.password or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = hostname if hostname and not hostname.startswith("/") else ""
    netloc = auth + quote(host, safe="") + (f":{client.port}" if client.port else "")
    database = (client.virtual_host or "").strip("/")
    query = urlencode({"host": hostname}) if hostname.startswith("/") else ""
    return urlunsplit(("pgflow", netloc, "/" + quote(database, safe=""), query, ""))


def redacted(url: str, mask: str = "**") -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{mask}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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
