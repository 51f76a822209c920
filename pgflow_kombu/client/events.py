"""Live events of one run: run and step started / completed / failed, as they happen.

How a watch works, so that no change is missed and an unwatched run costs (almost) nothing:

1. ``LISTEN pgflow_kombu_events`` on a connection of its own;
2. register interest: a row in ``pgflow_kombu.watched_runs`` (refreshed while watching, deleted
   at the end; a crashed watcher's row expires). Triggers on ``pgflow.runs`` and
   ``pgflow.step_states`` NOTIFY the run's id only while such a row exists;
3. read the run, then its steps, and yield what changed since the previous read (the first read
   yields everything that already happened), each event once;
4. wait for a notification of this run (or ``poll_interval``, the safety net for a change whose
   writer had not yet seen the watch row, or a setup where notifications cannot arrive; the
   first waits are shorter, see ``_Clock``) and go to 3, until the run has finished. In
   poll-only mode (``PGFLOW_POLL_ONLY``) step 1 is skipped and every wait is a sleep.

Payloads carry ids only (NOTIFY payloads are limited to 8000 bytes); outputs are read from the
rows, and left out of an event above :data:`MAX_EVENT_OUTPUT` bytes (``output_omitted``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.rows import dict_row

from pgflow_kombu.client.base import ClientBase
from pgflow_kombu.client.inputs import as_uuid, check_timeout
from pgflow_kombu.db.connect import (
    DEFAULT_CONNECT_TIMEOUT,
    connect,
    connection_params,
    poll_only,
    translated_errors,
)
from pgflow_kombu.db.queries import query
from pgflow_kombu.db.urls import to_libpq
from pgflow_kombu.errors import RunNotFound, RunTimeout
from pgflow_kombu.types import RunEvent

__all__ = ["MAX_EVENT_OUTPUT", "WATCH_TTL", "EventTracker", "EventsMixin"]

MAX_EVENT_OUTPUT = 8192
"""Outputs whose JSON text is longer than this many bytes are left out of events."""

WATCH_TTL = 600.0
"""Seconds a watch row lives unless refreshed (it is refreshed at half that while watching)."""

_FINISHED = {"completed": "run:completed", "failed": "run:failed", "cancelled": "run:cancelled"}


@dataclass
class EventTracker:
    """Turns successive reads of one run into events, each yielded once, in order.

    Events found by one read are ordered by time, then (ties: one transaction) run start
    first, steps in definition order (a dependency before its dependents), a step's start
    before its end; the run's end comes last.
    """

    run_id: UUID
    seen: set[tuple[str | None, str]] = field(default_factory=set)
    finished: bool = False

    def reported(self) -> list[str]:
        """Steps whose completion was reported: their outputs are not read again."""
        return [slug for slug, what in self.seen if slug is not None and what == "completed"]

    def update(self, run: dict[str, Any], steps: list[dict[str, Any]]) -> list[RunEvent]:
        found: list[tuple[tuple[datetime, int, int], RunEvent]] = []

        started_at: datetime = run["started_at"]

        def add(
            key: tuple[str | None, str], at: datetime | None, rank: int, phase: int, **kw: Any
        ) -> None:
            if key in self.seen:
                return
            self.seen.add(key)
            event = RunEvent(run_id=self.run_id, step_slug=key[0], at=at, **kw)
            found.append(((at or started_at, rank, phase), event))

        add((None, "started"), run["started_at"], -1, 0, event_type="run:started", status="started")
        for step in steps:
            slug, status = step["step_slug"], step["status"]
            rank = step["step_index"]
            # A step skipped by its condition (or a skipped dependency) never ran, though
            # pgflow's row, completed, has a start time; one skipped after failing did run.
            never_ran = status == "skipped" and step["skip_reason"] != "handler_failed"
            if step["started_at"] is not None and not never_ran:
                add(
                    (slug, "started"),
                    step["started_at"],
                    rank,
                    0,
                    event_type="step:started",
                    status="started",
                )
            if status == "completed":
                add(
                    (slug, "completed"),
                    step["completed_at"],
                    rank,
                    1,
                    event_type="step:completed",
                    status=status,
                    output=step["output"],
                    output_omitted=step["output_omitted"],
                )
            elif status == "skipped":
                add(
                    (slug, "skipped"),
                    step["skipped_at"],
                    rank,
                    1,
                    event_type="step:skipped",
                    status=status,
                    error_message=step["error_message"],
                    skip_reason=step["skip_reason"],
                )
            elif status == "failed":
                add(
                    (slug, "failed"),
                    step["failed_at"],
                    rank,
                    1,
                    event_type="step:failed",
                    status=status,
                    error_message=step["error_message"],
                )
        event_type = _FINISHED.get(run["status"])
        if event_type is not None:
            at = run["cancelled_at"] or run["completed_at"] or run["failed_at"]
            add(
                (None, "finished"),
                at,
                0,
                0,
                event_type=event_type,
                status=run["status"],
                output=run["output"],
                output_omitted=run["output_omitted"],
                error_message=run["error_message"],
            )
            self.finished = True
        # Stable sort; the run's end is added last and stays last (it ends the iteration), even
        # when a step's time is later (a step of a cancelled run may still change).
        found.sort(key=lambda item: (item[1].event_type in _FINISHED.values(), item[0]))
        return [event for _, event in found]


def _read(conn: psycopg.Connection[Any], tracker: EventTracker) -> list[RunEvent]:
    """The events since the tracker's last read. The run is read before its steps, so a
    finished run is never reported before the step events that led to it."""
    params: dict[str, Any] = {"run_id": tracker.run_id, "max_output": MAX_EVENT_OUTPUT}
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(query("runs.run_event_state"), params).fetchone()
        if run is None:
            raise RunNotFound(f"no run with id {tracker.run_id}")
        params["reported"] = tracker.reported()
        steps = cur.execute(query("runs.step_event_states"), params).fetchall()
    return tracker.update(run, steps)


async def _aread(conn: psycopg.AsyncConnection[Any], tracker: EventTracker) -> list[RunEvent]:
    params: dict[str, Any] = {"run_id": tracker.run_id, "max_output": MAX_EVENT_OUTPUT}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("runs.run_event_state"), params)
        run = await cur.fetchone()
        if run is None:
            raise RunNotFound(f"no run with id {tracker.run_id}")
        params["reported"] = tracker.reported()
        await cur.execute(query("runs.step_event_states"), params)
        steps = await cur.fetchall()
    return tracker.update(run, steps)


class _Clock:
    """The deadline of a watch, when its watch row wants refreshing, and how long to wait for a
    notification before reading anyway.

    The first waits are short (from ``FIRST_WAIT``, doubling up to ``poll_interval``): a change
    committed by a transaction that ran its trigger before the watch row was visible sends no
    notification, and such transactions end within milliseconds.
    """

    FIRST_WAIT = 0.05

    def __init__(self, run_id: UUID, timeout: float | None, poll_interval: float) -> None:
        now = time.monotonic()
        self.run_id = run_id
        self.timeout = timeout
        self.deadline = None if timeout is None else now + timeout
        self.poll_interval = poll_interval
        self.interval = min(self.FIRST_WAIT, poll_interval)
        self.refresh_at = now + WATCH_TTL / 2

    def next_wait(self) -> float:
        """Seconds to wait for a notification; raises RunTimeout past the deadline."""
        wait, self.interval = self.interval, min(self.interval * 2, self.poll_interval)
        if self.deadline is None:
            return wait
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RunTimeout(
                f"run {self.run_id} did not finish within {self.timeout} s", run_id=self.run_id
            )
        return min(wait, remaining)

    def refresh_due(self) -> bool:
        if time.monotonic() < self.refresh_at:
            return False
        self.refresh_at = time.monotonic() + WATCH_TTL / 2
        return True


class EventsMixin(ClientBase):
    def events(
        self,
        run_id: UUID | str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> Iterator[RunEvent]:
        """The run's events as they happen, starting with those that already happened; ends
        after the run's own ``run:completed`` / ``run:failed`` / ``run:cancelled`` event.

        Raises :class:`RunNotFound` for an unknown run and :class:`RunTimeout` when the run has
        not finished within ``timeout`` seconds (None: wait for ever). Holds a connection of its
        own while iterating; close the iterator (or let it end) to release it.
        """
        check_timeout(timeout)
        tracker = EventTracker(as_uuid(run_id))
        clock = _Clock(tracker.run_id, timeout, poll_interval)
        watch = {"run_id": tracker.run_id, "watcher_id": uuid4(), "ttl": WATCH_TTL}
        conn = connect(self.url)
        listening = not poll_only()  # behind a transaction pooler a LISTEN hears nothing
        try:
            with translated_errors():
                if listening:
                    conn.execute(query("runs.listen_events"))
                conn.execute(query("runs.watch_run"), watch)
            while True:
                with translated_errors():
                    batch = _read(conn, tracker)
                yield from batch
                if tracker.finished:
                    return
                wait = clock.next_wait()
                with translated_errors():
                    if clock.refresh_due():
                        conn.execute(query("runs.watch_run"), watch)
                    if not listening:
                        time.sleep(wait)
                        continue
                    for note in conn.notifies(timeout=wait):
                        if note.payload == str(tracker.run_id):
                            break
        finally:
            try:
                if not conn.closed:
                    conn.execute(query("runs.unwatch_run"), watch)
            except psycopg.Error:
                pass  # the row expires
            conn.close()

    async def aevents(
        self,
        run_id: UUID | str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> AsyncIterator[RunEvent]:
        """:meth:`events` for asyncio, on a psycopg ``AsyncConnection``."""
        check_timeout(timeout)
        tracker = EventTracker(as_uuid(run_id))
        clock = _Clock(tracker.run_id, timeout, poll_interval)
        watch = {"run_id": tracker.run_id, "watcher_id": uuid4(), "ttl": WATCH_TTL}
        with translated_errors():
            conn = await psycopg.AsyncConnection.connect(
                to_libpq(self.url),
                autocommit=True,
                connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                **connection_params(self.url),
            )
        listening = not poll_only()
        try:
            with translated_errors():
                if listening:
                    await conn.execute(query("runs.listen_events"))
                await conn.execute(query("runs.watch_run"), watch)
            while True:
                with translated_errors():
                    batch = await _aread(conn, tracker)
                for event in batch:
                    yield event
                if tracker.finished:
                    return
                wait = clock.next_wait()
                with translated_errors():
                    if clock.refresh_due():
                        await conn.execute(query("runs.watch_run"), watch)
                    if not listening:
                        await asyncio.sleep(wait)
                        continue
                    async for note in conn.notifies(timeout=wait):
                        if note.payload == str(tracker.run_id):
                            break
        finally:
            try:
                if not conn.closed:
                    await conn.execute(query("runs.unwatch_run"), watch)
            except psycopg.Error:
                pass  # the row expires
            await conn.close()
