"""Waiting for runs to finish, woken by the database's NOTIFY rather than by polling.

One listener thread per client holds a LISTEN connection on ``pgflow_kombu_run`` (payload
``<run_id>:<status>``, sent when a run completes or fails) and wakes the threads waiting for that run.
Every waiter also re-reads its run every ``poll_interval`` seconds: that is only the safety net for
setups where notifications cannot arrive. In poll-only mode (``PGFLOW_POLL_ONLY``, behind a
transaction-mode pooler, where a LISTEN would hear nothing) there is no listener thread and the
re-reads are all there is.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from typing import Any
from uuid import UUID

import psycopg

from pgflow_kombu.db.connect import connect, poll_only
from pgflow_kombu.db.queries import query

__all__ = ["RunListener"]

log = logging.getLogger(__name__)


class RunListener:
    """Fan-in of run-finished notifications to any number of waiting threads."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._waiters: dict[UUID, list[threading.Event]] = defaultdict(list)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.listening = not poll_only()

    def subscribe(self, run_id: UUID) -> threading.Event:
        """An event set when ``run_id`` finishes; subscribe *before* reading the run's status."""
        event = threading.Event()
        if not self.listening:
            return event  # never set: the waiter's re-reads find the finish
        with self._lock:
            self._waiters[run_id].append(event)
            self._ensure_started()
        # Wait until LISTEN is in place so a finish right after our status check is not missed.
        self._ready.wait(timeout=5)
        return event

    def unsubscribe(self, run_id: UUID, event: threading.Event) -> None:
        with self._lock:
            events = self._waiters.get(run_id)
            if events and event in events:
                events.remove(event)
                if not events:
                    del self._waiters[run_id]

    def close(self) -> None:
        self._stopping.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # closing anyway
                conn.cancel_safe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._ready.clear()
            self._thread = threading.Thread(
                target=self._run, name="pgflow-run-listener", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self._url) as conn:
                    self._conn = conn
                    conn.execute(query("client.listen_runs"))
                    self._ready.set()
                    self._wake_all()  # anything may have finished while we were reconnecting
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._dispatch(note.payload)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                log.warning("run listener lost its connection (%s); reconnecting", exc)
                self._ready.set()  # waiters fall back to polling meanwhile
                self._wake_all()
                self._stopping.wait(1.0)
            finally:
                self._conn = None

    def _dispatch(self, payload: str) -> None:
        run_text, _, _status = payload.partition(":")
        try:
            run_id = UUID(run_text)
        except ValueError:
            return
        with self._lock:
            events = list(self._waiters.get(run_id, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for group in self._waiters.values() for e in group]
        for event in events:
            event.set()
