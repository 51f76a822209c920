"""Which runs of the tasks this worker holds were cancelled, and telling their handlers.

Every held task shares one :class:`threading.Event` per run; the heartbeat thread asks the
database which of the held runs are in ``pgflow_kombu.cancelled_runs`` (one indexed query per
heartbeat, only while tasks are held) and sets their events, which handlers read as
``ctx.cancelled``. Listeners (the asyncio pool) are told too, to cancel their coroutines. The
database has already failed a cancelled run's tasks, so whatever such a handler returns is stale
when reported and changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["Cancellations"]

log = logging.getLogger("pgflow_kombu.worker")


class Cancellations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[threading.Event, int]] = {}
        self.listeners: list[Callable[[str], None]] = []
        self.cancelled_total = 0

    def watch(self, task: ClaimedTask) -> None:
        """Give ``task`` its run's event (one per run, shared by its held tasks)."""
        with self._lock:
            event, count = self._runs.get(task.run_id, (None, 0))
            if event is None:
                event = threading.Event()
            self._runs[task.run_id] = (event, count + 1)
        task.cancel = event

    def forget(self, task: ClaimedTask) -> None:
        """``task`` is no longer held (its outcome was produced)."""
        with self._lock:
            entry = self._runs.get(task.run_id)
            if entry is None:
                return
            event, count = entry
            if count <= 1:
                del self._runs[task.run_id]
            else:
                self._runs[task.run_id] = (event, count - 1)

    def held_runs(self) -> list[str]:
        """Runs with held tasks that are not known to be cancelled yet."""
        with self._lock:
            return [run_id for run_id, (event, _) in self._runs.items() if not event.is_set()]

    def cancel(self, run_ids: list[str]) -> None:
        """These runs were cancelled: set their events and tell the listeners."""
        for run_id in run_ids:
            with self._lock:
                entry = self._runs.get(run_id)
            if entry is None or entry[0].is_set():
                continue
            entry[0].set()
            self.cancelled_total += 1
            log.info(
                "run %s was cancelled: its running handlers see ctx.cancelled, their results "
                "are discarded",
                run_id,
                extra={"event": "run_cancelled", "run_id": run_id},
            )
            for listener in self.listeners:
                try:
                    listener(run_id)
                except Exception:
                    log.exception("cancellation listener failed for run %s", run_id)
