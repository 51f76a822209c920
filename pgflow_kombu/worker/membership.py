"""The worker's ``pgflow.workers`` rows: registration, heartbeats, deprecation, recovery.

Every served queue gets a row of its own (``queue_name`` = flow slug), as pgflow workers do. A
background thread updates ``last_heartbeat_at`` every ``heartbeat_interval`` seconds, notices
when an operator set ``deprecated_at`` (the worker then stops taking work and finishes what it
holds), re-inserts rows that disappeared, and every ``recovery_interval`` seconds runs
``pgflow_kombu.recover_stalled_tasks``, which requeues tasks left ``started`` by workers that
can no longer be running them, so no external cron is needed. Registration also lists the ids
in ``pgflow_kombu.known_workers``: workers that heartbeat while they work, whose tasks recovery
may take as soon as their heartbeat is stale (other workers' only after the step timeout).
Each heartbeat also asks which runs of the held tasks were cancelled (see cancellation.py).

It also knows until when the worker surely still counts as alive for the others: a heartbeat
that went through was committed after it was sent, so no recovery can take this worker's tasks
before ``stalled_after`` seconds after that (:meth:`Membership.alive_until`). The worker claims and
starts tasks only before then.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from pgflow_kombu.db.errors import UNDEFINED_FUNCTION, UNDEFINED_TABLE
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import DatabaseError, PgFlowError
from pgflow_kombu.worker.cancellation import Cancellations
from pgflow_kombu.worker.connectivity import Connectivity
from pgflow_kombu.worker.link import Link, is_connection_error

__all__ = ["STALL_MARGIN", "Membership", "default_function_name"]

# The part of stalled_after kept as a safety margin when deciding the worker is still alive.
STALL_MARGIN = 0.1

log = logging.getLogger("pgflow_kombu.worker")


def default_function_name() -> str:
    """``pgflow-kombu:<hostname>:<pid>``: what ``pgflow.workers.function_name`` shows."""
    return f"pgflow-kombu:{socket.gethostname()}:{os.getpid()}"


class Membership:
    def __init__(
        self,
        url: str,
        queues: Sequence[str],
        *,
        heartbeat_interval: float,
        stalled_after: float,
        recovery_interval: float | None = None,
        function_name: str | None = None,
        on_deprecated: Callable[[], None] | None = None,
        on_connection_lost: Callable[[], None] | None = None,
        cancellations: Cancellations | None = None,
        connectivity: Connectivity | None = None,
        statement_timeout: float | None = None,
    ) -> None:
        self.queues = list(queues)
        self.worker_ids: dict[str, str] = {q: str(uuid.uuid4()) for q in self.queues}
        self.function_name = function_name or default_function_name()
        self.heartbeat_interval = heartbeat_interval
        self.stalled_after = stalled_after
        self.recovery_interval = (
            recovery_interval
            if recovery_interval is not None
            else max(heartbeat_interval, stalled_after / 2)
        )
        self.deprecated = False
        self.recovered_total = 0
        self._on_deprecated = on_deprecated
        self._on_connection_lost = on_connection_lost
        self._link = Link(
            url,
            application_name="pgflow-kombu-heartbeat",
            statement_timeout=statement_timeout,
            connectivity=connectivity,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgflow-heartbeat", daemon=True)
        self._recovery_missing = False
        self._healthy = True
        self.cancellations = cancellations
        self._cancel_missing = False
        self._beat_sent_at: float | None = None  # monotonic send time of the last good beat

    def alive_until(self) -> float:
        """Monotonic time until which no recovery can take this worker's tasks (minus a margin),
        by the last heartbeat that went through (-inf before the first)."""
        if self._beat_sent_at is None:
            return float("-inf")
        return self._beat_sent_at + self.stalled_after * (1 - STALL_MARGIN)

    @property
    def healthy(self) -> bool:
        """Whether the last heartbeat went through."""
        return self._healthy

    def register(self) -> None:
        """Insert the rows (raises when the database cannot be reached)."""
        sent_at = time.monotonic()
        self._link.fetch(
            query("worker.register"),
            {
                "worker_ids": list(self.worker_ids.values()),
                "queue_names": list(self.worker_ids),
                "function_name": self.function_name,
            },
        )
        self._beat_sent_at = sent_at

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._link.close()

    def beat(self) -> None:
        """One heartbeat: refresh the rows, re-insert lost ones, notice deprecation."""
        sent_at = time.monotonic()
        rows = self._link.fetch(
            query("worker.heartbeat"), {"worker_ids": list(self.worker_ids.values())}
        )
        if len(rows) < len(self.worker_ids):
            self.register()
        else:
            self._beat_sent_at = sent_at
        if any(deprecated for _id, _queue, deprecated in rows) and not self.deprecated:
            self.deprecated = True
            log.warning(
                "this worker was deprecated in pgflow.workers: it takes no new work and stops "
                "once its running tasks are done",
                extra={"event": "worker_deprecated"},
            )
            if self._on_deprecated is not None:
                self._on_deprecated()

    def recover(self) -> int:
        """Requeue tasks of dead workers; returns how many (0 when the function is missing)."""
        if self._recovery_missing:
            return 0
        try:
            rows = self._link.fetch(
                query("worker.recover_stalled_tasks"), {"stalled_after": self.stalled_after}
            )
        except DatabaseError as exc:
            if exc.sqlstate == UNDEFINED_FUNCTION:  # an older schema: recovery is not installed
                self._recovery_missing = True
                log.warning(
                    "pgflow_kombu.recover_stalled_tasks is missing: no stalled-task recovery"
                )
                return 0
            raise
        count = int(rows[0][0]) if rows and rows[0][0] else 0
        if count:
            self.recovered_total += count
            log.warning(
                "requeued %d stalled task(s) of workers whose heartbeat stopped",
                count,
                extra={"event": "tasks_recovered", "count": count},
            )
        return count

    def check_cancelled(self) -> None:
        """Tell the held tasks whose run was cancelled (one query, only while tasks are held)."""
        if self.cancellations is None or self._cancel_missing:
            return
        held = self.cancellations.held_runs()
        if not held:
            return
        try:
            rows = self._link.fetch(query("control.cancelled_among"), {"run_ids": held})
        except DatabaseError as exc:
            if exc.sqlstate == UNDEFINED_TABLE:  # an older schema: no run control
                self._cancel_missing = True
                return
            raise
        if rows:
            self.cancellations.cancel([r[0] for r in rows])

    def _run(self) -> None:
        # Spread the recovery runs of many workers started together.
        next_recovery = time.monotonic() + random.uniform(0, self.recovery_interval)
        while not self._stop.wait(self.heartbeat_interval if self._healthy else 1.0):
            try:
                self.beat()
                self.check_cancelled()
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + self.recovery_interval
                    self.recover()
                self._healthy = True
            except PgFlowError as exc:
                lost = is_connection_error(exc)
                if lost and self._on_connection_lost is not None:
                    self._on_connection_lost()
                if self._healthy:
                    # A lost connection is logged once for the whole worker (connectivity.py).
                    level = logging.DEBUG if lost else logging.ERROR
                    log.log(level, "heartbeat failed: %s", exc, extra={"event": "heartbeat_failed"})
                self._healthy = False
            except Exception:
                log.exception("heartbeat thread error")
                self._healthy = False
