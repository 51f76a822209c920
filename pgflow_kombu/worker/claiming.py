"""The worker's default message source: read and claim in one round trip.

Each cycle runs one ``pgflow_kombu.read_and_claim`` (through :meth:`Claims.read_and_claim`) over
every served flow queue, asking for no more tasks than the worker has room for; the statement
reads the messages and starts their tasks in one transaction, so there is no message that was
read and not yet claimed. Between reads the source waits on the wake-up notifications that the
flow queues' insert trigger sends (``pgflow_kombu.q_<name>``, installed on :meth:`open`, as the
kombu transport does), and reads again after ``poll_interval`` seconds without one (delayed
messages, retries and expired visibilities announce themselves to nobody). The trigger stays
quiet while a message before the new one still waits for its first read, so a read that left
room may have raced with an insert: the next wait is cut to ``RECHECK_DELAY``.

The messages behind claimed tasks need no acknowledgement: reporting the task archives or delays
its message.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.errors import describe
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import ConnectionFailed, PgFlowError
from pgflow_kombu.transport.listener import Waker
from pgflow_kombu.transport.names import channel_name
from pgflow_kombu.worker.claims import Claims
from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["RECHECK_DELAY", "ClaimingSource"]

RECHECK_DELAY = 0.05  # seconds before reading again after a read that left room


class ClaimingSource:
    """Used from the worker's loop thread only, except :meth:`wake`."""

    def __init__(self, url: str, *, read_visibility: int = 30, poll_interval: float = 1.0) -> None:
        self.url = url
        self.read_visibility = read_visibility
        self.poll_interval = poll_interval
        self._queues: list[str] = []
        self._turn = 0
        self._consuming = False
        self._listen: psycopg.Connection[Any] | None = None
        self._waker = Waker()
        self._dirty = True  # read at once: the queues may hold messages nobody announced
        self._read_at = 0.0  # when the last read ran
        self._recheck_at: float | None = None

    def open(self, queues: Sequence[str], prefetch: int) -> None:
        self._queues = list(queues)
        self._consuming = True
        self._ensure_listening()

    def _ensure_listening(self) -> None:
        """LISTEN on the queues' wake-up channels (before any read, so that no insert after it
        goes unnoticed), making sure each queue has its trigger and delivery-order index."""
        if self._listen is not None and not self._listen.closed:
            return
        try:
            conn = connect(self.url, application_name="pgflow-kombu-listen")
        except PgFlowError as exc:
            raise ConnectionFailed(f"cannot listen for new messages: {exc}") from exc
        try:
            conn.execute(query("worker.ensure_flow_queues"), {"queues": self._queues})
            for queue in self._queues:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_name(queue))))
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            raise ConnectionFailed(f"cannot listen for new messages: {describe(exc)}") from exc
        self._listen = conn

    @property
    def backlogged(self) -> bool:
        """The last read took all it asked for: the queues may well hold more."""
        return self._dirty and self._read_at > 0

    def claim(self, claims: Claims, limit: int, timeout: float) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks, waiting up to ``timeout`` s for some to be queued;
        returns early (maybe with nothing) after :meth:`wake`.

        Raises :class:`~pgflow_kombu.errors.PgFlowError` (a
        :class:`~pgflow_kombu.errors.ConnectionFailed` when the database is lost)."""
        if not self._consuming or limit <= 0 or not self._queues:
            return []
        deadline = time.monotonic() + timeout
        while True:
            if self._due(time.monotonic()):
                self._ensure_listening()
                tasks = claims.read_and_claim(self._rotation(), limit, self.read_visibility)
                self._read_at = now = time.monotonic()
                # A full read may have left more behind; one that left room may have raced
                # with an insert whose trigger stayed quiet.
                self._dirty = len(tasks) >= limit
                self._recheck_at = now + RECHECK_DELAY if tasks and not self._dirty else None
                if tasks:
                    return tasks
            now = time.monotonic()
            if now >= deadline or not self._consuming:
                return []
            outcome = self._wait(min(deadline, self._next_due()) - now)
            if outcome == "notified":
                self._dirty = True
            elif outcome == "woken":
                return []

    def _due(self, now: float) -> bool:
        """Whether the queues may hold something this source has not read."""
        return self._dirty or now >= self._next_due()

    def _next_due(self) -> float:
        """When a read is due without a notification: the fallback poll, or a recheck."""
        poll = self._read_at + self.poll_interval
        return poll if self._recheck_at is None else min(poll, self._recheck_at)

    def _rotation(self) -> list[str]:
        """The queues, starting one further each cycle (no queue always goes first)."""
        n = len(self._queues)
        self._turn = (self._turn + 1) % n
        return self._queues[self._turn :] + self._queues[: self._turn]

    def _wait(self, timeout: float) -> str:
        """Wait for a notification ("notified"), a :meth:`wake` ("woken") or the timeout.

        A broken listening connection (it may have died in an outage that is over by now) is
        replaced at once and counts as a notification: any sent meanwhile are lost, so read.
        Raises :class:`~pgflow_kombu.errors.ConnectionFailed` when no new one can be opened."""
        self._ensure_listening()
        conn = self._listen
        assert conn is not None
        try:
            if any(True for _ in conn.notifies(timeout=0)):
                return "notified"
            waker = self._waker.fileno()
            ready = _select([conn.fileno(), waker], max(0.0, timeout))
            if waker in ready:
                self._waker.drain()
                return "woken"
            if ready and any(True for _ in conn.notifies(timeout=0)):
                return "notified"
            return "timeout"
        except (psycopg.Error, OSError):
            self._drop_listen()
            self._ensure_listening()
            return "notified"

    def ack(self, handles: Sequence[Any]) -> None:
        """Nothing to do: reporting the task archives or delays its message."""

    def wake(self) -> None:
        """Make a waiting :meth:`claim` return at once (from any thread)."""
        self._waker.wake()

    def stop_consuming(self) -> None:
        self._consuming = False
        self._waker.wake()

    def close(self) -> None:
        self._consuming = False
        self._drop_listen()
        self._waker.close()

    def _drop_listen(self) -> None:
        self._dirty = True  # notifications may be lost with the connection
        conn, self._listen = self._listen, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _select(fds: list[int], timeout: float) -> list[int]:
    """The descriptors among ``fds`` readable within ``timeout`` seconds."""
    try:
        ready, _, _ = select.select(fds, [], [], timeout)
    except InterruptedError:
        return []
    return ready
