"""Run control: cancel a run, retry a failed one, delete one, prune finished ones (and idle
rate-limit buckets).

A cancelled run is ``failed`` in pgflow's tables (what every 0.8.1 worker and client takes for
finished) plus a row in ``pgflow_kombu.cancelled_runs``; this client reads it as ``cancelled``.
sql/migrations/0040_control.sql says why and what each function changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

from typing_extensions import LiteralString

from pgflow_kombu.client.base import ClientBase
from pgflow_kombu.client.inputs import as_uuid
from pgflow_kombu.db.queries import query
from pgflow_kombu.durations import parse_duration
from pgflow_kombu.errors import ConfigurationError, DatabaseError, RunNotFound, RunNotRetryable
from pgflow_kombu.types import PruneResult

__all__ = ["DEFAULT_PRUNE_BATCH", "ControlMixin", "prune_batches"]

DEFAULT_PRUNE_BATCH = 1000
"""Runs (or archived messages) deleted per transaction by :meth:`ControlMixin.prune`."""

OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"


class ControlMixin(ClientBase):
    run_control = True

    def cancel_run(self, run_id: UUID | str, *, reason: str | None = None) -> bool:
        """Cancel a started run: no further task of it starts, running handlers see
        ``ctx.cancelled`` and their results are discarded. False when it had already finished;
        raises :class:`RunNotFound` when there is no such run."""
        uid = as_uuid(run_id)
        with self.connection() as conn:
            row = conn.execute(query("control.cancel_run"), {"run_id": uid, "reason": reason})
            found = row.fetchone()
        if found is None or found[0] is None:
            raise RunNotFound(f"no run with id {run_id}")
        return bool(found[0])

    def retry_run(self, run_id: UUID | str) -> int:
        """Retry a failed (or cancelled) run from where it stopped: its unfinished tasks are
        queued again with fresh attempts; completed steps keep their outputs. Returns how many
        tasks were queued. Raises :class:`RunNotRetryable` when the run is not failed or
        cancelled, :class:`RunNotFound` when there is no such run."""
        uid = as_uuid(run_id)
        try:
            with self.connection() as conn:
                found = conn.execute(query("control.retry_run"), {"run_id": uid}).fetchone()
        except DatabaseError as exc:
            if exc.sqlstate == OBJECT_NOT_IN_PREREQUISITE_STATE:
                raise RunNotRetryable(exc.diag.message_primary or str(exc)) from exc
            raise
        if found is None or found[0] is None:
            raise RunNotFound(f"no run with id {run_id}")
        return int(found[0])

    def delete_run(self, run_id: UUID | str) -> None:
        """Delete a run with its step states, tasks, queue messages and our rows of it
        (whatever its status: a worker still running one of its tasks has its report ignored).
        Raises :class:`RunNotFound` when there is no such run."""
        uid = as_uuid(run_id)
        with self.connection() as conn:
            found = conn.execute(query("control.delete_run"), {"run_id": uid}).fetchone()
        if found is None or not found[0]:
            raise RunNotFound(f"no run with id {run_id}")

    def prune(
        self, *, older_than: timedelta | str | float, batch_size: int = DEFAULT_PRUNE_BATCH
    ) -> PruneResult:
        """Delete runs that finished (completed, failed or cancelled) more than ``older_than``
        ago (a timedelta, seconds, or text such as ``"7d"``), with everything of theirs, and the
        queue archive messages as old, and the rate-limit buckets that are full again (idle
        for their refill window; a missing bucket admits exactly as a full one), so that keyed
        rate limits with many keys do not grow the table forever; ``batch_size`` rows per
        transaction, so that running workers are never held up for long."""
        age = parse_duration(older_than)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        with self.connection() as conn:

            def count(sql: LiteralString, params: dict[str, Any]) -> int:
                row = conn.execute(sql, params).fetchone()
                return int(row[0]) if row and row[0] else 0

            runs, archived, buckets = prune_batches(count, age, batch_size)
        return PruneResult(runs=runs, archived_messages=archived, rate_buckets=buckets)


def prune_batches(
    count: Callable[[LiteralString, dict[str, Any]], int],
    age: timedelta,
    batch_size: int,
    *,
    pause: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[int, int, int]:
    """Run ``prune_runs``, ``prune_archives`` then ``prune_rate_buckets`` batch after batch
    until one comes back short (or ``stop()`` says so); ``count(sql, params)`` runs one
    statement in its own transaction and returns the number it deleted. ``pause`` seconds
    between batches leave the server to other work. Returns (runs, archived messages, rate
    buckets) deleted."""
    totals = []
    params = {"older_than": age.total_seconds(), "batch_size": batch_size}
    for name in ("control.prune_runs", "control.prune_archives", "control.prune_rate_buckets"):
        total = 0
        while True:
            deleted = count(query(name), params)
            total += deleted
            if deleted < batch_size or stop():
                break
            if pause:
                time.sleep(pause)
        totals.append(total)
    return totals[0], totals[1], totals[2]
