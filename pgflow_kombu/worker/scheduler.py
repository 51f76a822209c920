"""Firing due schedule ticks: every worker runs a :class:`Scheduler` thread; each tick starts once.

No pg_cron: the database holds each schedule's ``next_tick_at`` (see ``sql/queries/schedules.sql``)
and workers take turns. One pass locks one due schedule at a time (``FOR UPDATE SKIP LOCKED``:
a schedule another worker is firing is skipped), starts the runs of its due ticks
(``pgflow_kombu.start_schedule_tick``: the tick's row, its idempotency key and ``start_flow``),
and moves ``next_tick_at`` past now, all in one transaction. A second worker that reads the
schedule afterwards finds it no longer due; a tick row that exists already starts nothing. So a
tick starts exactly once however many workers run, and a crash mid-pass rolls the whole pass
back for the next worker to redo.

The thread sleeps until the earliest ``next_tick_at`` (computed from the database clock, so
worker clocks may differ), at most ``poll_interval`` (to see schedules other processes add),
which gives sub-second precision for per-second cron expressions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.errors import describe, translate
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.flows.schedules import due_ticks, next_tick
from pgflow_kombu.settings import WORKER_DEFAULTS

__all__ = ["TICKS_KEPT", "Scheduler"]

log = logging.getLogger("pgflow_kombu.worker.scheduler")

TICKS_KEPT = 1000
"""Tick rows kept per schedule (history; older ones are deleted as new ones start)."""

# A schedule whose cron cannot be evaluated (written by hand) is retried this much later.
_BROKEN_RETRY = timedelta(minutes=1)
# Woken this long after the next tick is due, so that the database finds it due.
_LATE = 0.002


class Scheduler:
    """Fires due ticks of every schedule in the database from a background thread."""

    def __init__(
        self,
        url: str,
        *,
        poll_interval: float = WORKER_DEFAULTS.scheduler_poll_interval,
        ticks_kept: int = TICKS_KEPT,
    ) -> None:
        self.url = url
        self.poll_interval = poll_interval
        self.ticks_kept = ticks_kept
        self.started_runs = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pgflow-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._close()

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.run_once()
                wait = self.seconds_to_next_tick()
                backoff = 0.5
            except (PgFlowError, psycopg.Error) as exc:
                log.warning(
                    "scheduler pass failed (%s); retrying in %.1f s",
                    describe(exc) if isinstance(exc, psycopg.Error) else exc,
                    backoff,
                    extra={"event": "scheduler_failed"},
                )
                self._close()
                wait = backoff
                backoff = min(backoff * 2, self.poll_interval)
            except Exception:  # a bug must not end the thread: schedules would stop silently
                log.exception("scheduler pass crashed", extra={"event": "scheduler_crashed"})
                self._close()
                wait = self.poll_interval
            self._stop.wait(wait)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, application_name="pgflow-kombu-scheduler")
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def seconds_to_next_tick(self) -> float:
        """How long to sleep: until the earliest active next tick, at most ``poll_interval``."""
        row = self._connection().execute(query("schedules.seconds_to_next_tick")).fetchone()
        if row is None or row[0] is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, float(row[0])) + _LATE)

    def run_once(self) -> int:
        """Start the due ticks of every schedule no other worker is firing; returns how many
        runs were started."""
        started = 0
        conn = self._connection()
        while not self._stop.is_set():
            try:
                with conn.transaction():
                    cur = conn.cursor(row_factory=dict_row)
                    schedule = cur.execute(query("schedules.lock_due_schedule")).fetchone()
                    if schedule is None:
                        break
                    started += self._fire(conn, schedule)
            except psycopg.Error as exc:
                raise translate(exc) from exc
        self.started_runs += started
        return started

    def _fire(self, conn: psycopg.Connection[Any], s: dict[str, Any]) -> int:
        """Start one locked schedule's due ticks and move its next tick past now."""
        name: str = s["name"]
        now: datetime = s["now"]
        try:
            ticks, skipped = due_ticks(
                s["cron"],
                s["timezone"],
                next_tick_at=s["next_tick_at"],
                now=now,
                catch_up=s["catch_up"],
                catch_up_limit=s["catch_up_limit"],
                misfire_grace=s["misfire_grace"],
            )
            following = next_tick(s["cron"], s["timezone"], now)
        except Exception as exc:  # a cron or zone written by hand that croniter refuses
            broken = f"cannot evaluate cron {s['cron']!r} in {s['timezone']!r}: {exc}"
            log.error("schedule %r: %s", name, broken, extra={"event": "schedule_broken"})
            self._advance(conn, name, now + _BROKEN_RETRY, broken)
            return 0
        if skipped:
            log.info(
                "schedule %r: %d missed tick(s) skipped (catch_up=%s)",
                name,
                skipped,
                s["catch_up"],
                extra={"event": "schedule_ticks_skipped", "schedule": name, "count": skipped},
            )
        started = 0
        error: str | None = None
        try:
            with conn.transaction():  # a savepoint: a start that fails skips this pass's ticks
                for tick in ticks:
                    row = conn.execute(
                        query("schedules.start_tick"),
                        {"name": name, "tick_at": tick, "manual": False},
                    ).fetchone()
                    if row is not None and row[0] is not None:
                        started += 1
        except psycopg.Error as exc:
            error = describe(exc)
            started = 0
            log.error(
                "schedule %r: starting a run of flow %r failed: %s",
                name,
                s["flow_slug"],
                error,
                extra={"event": "schedule_start_failed", "schedule": name},
            )
        self._advance(conn, name, following, error)
        if started:
            conn.execute(query("schedules.trim_ticks"), {"name": name, "keep": self.ticks_kept})
        return started

    @staticmethod
    def _advance(
        conn: psycopg.Connection[Any], name: str, next_tick_at: datetime, error: str | None
    ) -> None:
        conn.execute(
            query("schedules.advance_schedule"),
            {"name": name, "next_tick_at": next_tick_at, "error": error},
        )
