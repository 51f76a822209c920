"""LISTEN on the wake-up channels of the queues a transport consumes.

One dedicated connection per transport. Its socket is what kombu's event loop watches
(``register_with_event_loop``) and what the blocking ``drain_events`` waits on, together with a
pipe that other threads use to interrupt the wait (an acknowledgement that frees prefetch room).
"""

from __future__ import annotations

import os
import select
import threading
from contextlib import suppress
from typing import Any

import psycopg

from pgflow_kombu.db.errors import translate
from pgflow_kombu.transport import store
from pgflow_kombu.transport.connections import Connection, close_quietly

__all__ = ["Listener", "Waker"]


class Waker:
    """A self-pipe: ``wake()`` from any thread makes ``fileno()`` readable.

    Closing is idempotent and later calls do nothing: the pipe's descriptor numbers are reused by
    the process once closed, so a late ``wake``/``drain``/``close`` from another thread must never
    touch them (it would write to, read from or close somebody else's file).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        """The read end (-1 once closed)."""
        return self._read

    def wake(self) -> None:
        with self._lock:
            if self._write < 0:
                return
            # A full pipe already holds a pending wake-up.
            with suppress(OSError):
                os.write(self._write, b"x")

    def drain(self) -> None:
        with self._lock:
            if self._read < 0:
                return
            try:
                while os.read(self._read, 512):
                    pass
            except (BlockingIOError, OSError):
                pass

    def close(self) -> None:
        with self._lock:
            fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)


class Listener:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._counts: dict[str, int] = {}

    def fileno(self) -> int:
        return self._conn.fileno()

    def backend_pid(self) -> int:
        """The server process of the listening connection: consumers live as long as it does."""
        return int(self._conn.info.backend_pid)

    def listen(self, channel: str) -> None:
        count = self._counts.get(channel, 0)
        if count == 0:
            self._run(store.listen, channel)
        self._counts[channel] = count + 1

    def unlisten(self, channel: str) -> None:
        count = self._counts.get(channel, 0)
        if count <= 1:
            self._counts.pop(channel, None)
            if count == 1 and not self._conn.closed:
                self._run(store.unlisten, channel)
        else:
            self._counts[channel] = count - 1

    def poll(self) -> set[str]:
        """Channels notified since the last call (never blocks)."""
        try:
            return {n.channel for n in self._conn.notifies(timeout=0)}
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def wait(self, timeout: float | None, waker: Waker | None = None) -> set[str]:
        """Channels notified, waiting up to ``timeout`` seconds (None: forever) for the first."""
        notified = self.poll()
        if notified:
            return notified
        fds: list[Any] = [self.fileno()]
        waker_fd = waker.fileno() if waker is not None else -1
        if waker_fd >= 0:
            fds.append(waker_fd)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            ready = []
        if waker is not None and waker_fd >= 0 and waker_fd in ready:
            waker.drain()
        return self.poll() if ready else set()

    def close(self) -> None:
        self._counts.clear()
        close_quietly(self._conn)

    def _run(self, operation: Any, channel: str) -> None:
        try:
            operation(self._conn, channel)
        except psycopg.Error as exc:
            raise translate(exc) from exc
