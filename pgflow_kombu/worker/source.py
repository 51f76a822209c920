"""Where the worker's messages come from: the protocol, and a direct pgmq source.

The worker only needs, per drain cycle, the pgmq ids of the messages delivered on each flow
queue, and a way to acknowledge them once their task is reported (or at once when there was no
task to claim). :class:`~pgflow_kombu.worker.consumer.KombuSource` (the default) rides the
``pgflow://`` kombu transport; :class:`PgmqSource` reads pgmq directly and serves as a fallback
and a baseline.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from pgflow_kombu.db.connect import connect, poll_only
from pgflow_kombu.db.errors import describe
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import ConnectionFailed
from pgflow_kombu.worker.link import Link

__all__ = ["Delivery", "MessageSource", "PgmqSource"]

log = logging.getLogger("pgflow_kombu.worker")


@dataclass(slots=True, frozen=True)
class Delivery:
    """One delivered pgflow message: its queue (= flow slug), pgmq id and source handle."""

    queue: str
    msg_id: int
    handle: Any = None


class MessageSource(Protocol):
    """Delivers pgflow messages of some queues; used from one thread only.

    ``read_visibility``: seconds a delivered message stays hidden from other readers (the worker
    sets it before :meth:`open`; claims extend it for steps with longer timeouts).
    """

    read_visibility: int

    def open(self, queues: Sequence[str], prefetch: int) -> None: ...

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        """Wait up to ``timeout`` s for messages; return what one cycle delivered (<= limit).

        Raises :class:`~pgflow_kombu.errors.ConnectionFailed` when the database is lost.
        """
        ...

    def ack(self, handles: Sequence[Any]) -> None:
        """Acknowledge delivered messages (their task was reported, or there was none)."""
        ...

    def stop_consuming(self) -> None:
        """Deliver nothing more (shutdown); acks still work."""
        ...

    def wake(self) -> None:
        """Make a :meth:`fetch` waiting in another thread return soon (work to hand back)."""
        ...

    def close(self) -> None: ...


class PgmqSource:
    """Reads the flow queues with ``pgmq.read``, woken by pgmq's insert notifications.

    Messages are hidden for ``read_visibility`` seconds. Without insert notifications enabled on
    a queue, or in poll-only mode (``PGFLOW_POLL_ONLY``), the source polls every
    ``poll_interval`` seconds.
    """

    def __init__(self, url: str, *, read_visibility: int = 30, poll_interval: float = 0.5) -> None:
        self.url = url
        self.read_visibility = read_visibility
        self.poll_interval = poll_interval
        self._link = Link(url, application_name="pgflow-kombu-reader")
        self._listen: psycopg.Connection[Any] | None = None
        self._queues: list[str] = []
        self._turn = 0
        self._consuming = False
        self._woken = False
        self._polling = poll_only()

    def open(self, queues: Sequence[str], prefetch: int) -> None:
        self._queues = list(queues)
        self._consuming = True
        if not self._polling:
            self._ensure_listening()

    def _ensure_listening(self) -> None:
        if self._listen is not None and not self._listen.closed:
            return
        conn = connect(self.url, application_name="pgflow-kombu-listen")
        for queue in self._queues:
            channel = f"pgmq.q_{queue}.INSERT"
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self._listen = conn

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        if not self._consuming or limit <= 0:
            time.sleep(min(timeout, 0.05))
            return []
        deadline = time.monotonic() + timeout
        while True:
            found = self._read(limit)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._woken:
                self._woken = False
                return []
            self._wait(min(remaining, self.poll_interval))

    def _read(self, limit: int) -> list[Delivery]:
        found: list[Delivery] = []
        n = len(self._queues)
        for i in range(n):
            queue = self._queues[(self._turn + i) % n]
            rows = self._link.fetch(
                query("worker.read_messages"),
                {"queue_name": queue, "vt": self.read_visibility, "qty": limit - len(found)},
            )
            found.extend(Delivery(queue, row[0]) for row in rows)
            if len(found) >= limit:
                break
        self._turn += 1
        return found

    def _wait(self, timeout: float) -> None:
        if self._polling:
            time.sleep(timeout)
            return
        try:
            self._ensure_listening()
            assert self._listen is not None
            for _note in self._listen.notifies(timeout=timeout, stop_after=1):
                pass
        except (psycopg.Error, ConnectionFailed) as exc:
            self._drop_listen()
            raise ConnectionFailed(f"lost the listening connection: {describe(exc)}") from exc

    def ack(self, handles: Sequence[Any]) -> None:
        """Nothing to do: reporting the task archived or delayed its message."""

    def wake(self) -> None:
        """Make a waiting :meth:`fetch` return at its next poll (from any thread)."""
        self._woken = True

    def stop_consuming(self) -> None:
        self._consuming = False

    def close(self) -> None:
        self._consuming = False
        self._link.close()
        self._drop_listen()

    def _drop_listen(self) -> None:
        conn, self._listen = self._listen, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
