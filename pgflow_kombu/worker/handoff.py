"""How claimed tasks move between the worker's threads: the loop submits them to the pool, a
slot's gate may hand one back unstarted, a finished one goes to the reporter and frees its slot,
and the loop drains what was finished and reported (acknowledging the messages).

A mixin of :class:`~pgflow_kombu.worker.worker.Worker`, which creates the attributes declared
here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TypeVar

from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.worker.cancellation import Cancellations
from pgflow_kombu.worker.claiming import ClaimingSource
from pgflow_kombu.worker.claims import Claims
from pgflow_kombu.worker.events import WorkerEvents
from pgflow_kombu.worker.logs import log_outcome
from pgflow_kombu.worker.membership import Membership
from pgflow_kombu.worker.pools import Pool
from pgflow_kombu.worker.reporter import Reporter
from pgflow_kombu.worker.source import MessageSource
from pgflow_kombu.worker.status import WorkerStats
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome, ReportResult

__all__ = ["TaskHandoff"]

log = logging.getLogger("pgflow_kombu.worker")

Item = TypeVar("Item")


class TaskHandoff:
    """The worker's task hand-offs (see the module docstring)."""

    membership: Membership
    cancellations: Cancellations
    stats: WorkerStats
    _events: WorkerEvents
    _source: MessageSource | ClaimingSource | None
    _claims: Claims
    _reporter: Reporter
    _pool: Pool
    _not_started: queue.SimpleQueue[ClaimedTask]
    _reported: queue.SimpleQueue[list[tuple[Outcome, ReportResult]]]
    _done_tasks: queue.SimpleQueue[ClaimedTask]
    _wakeup: threading.Event
    _held: int

    def _may_start(self, task: ClaimedTask) -> bool:
        """The pool's gate (a slot's thread): start ``task`` only if no recovery can have given
        it to another worker yet, judged by the last heartbeat that went through. Otherwise the
        loop hands it back (if it is still ours) and it is never started here."""
        late = time.monotonic() - self.membership.alive_until()
        if late < 0:
            return True
        log.warning(
            "not starting %s (run %s, attempt %d): no heartbeat went through for nearly %g s, "
            "another worker may have it; handing it back",
            task.label,
            task.run_id,
            task.attempt,
            self.membership.stalled_after,
            extra={"event": "task_not_started", "run_id": task.run_id, "attempt": task.attempt},
        )
        self._not_started.put(task)
        self._wake()
        return False

    def _submit(self, tasks: list[ClaimedTask]) -> None:
        self._held += len(tasks)
        self._events.claimed(tasks)
        for task in tasks:
            self.cancellations.watch(task)
            self._pool.submit(task)

    def _on_outcome(self, outcome: Outcome) -> None:
        """Called by the pool (any thread) when an attempt ends."""
        self.cancellations.forget(outcome.task)
        if outcome.task.cancelled:
            log.info(
                "result of %s (run %s, attempt %d) discarded: its run was cancelled",
                outcome.task.label,
                outcome.task.run_id,
                outcome.task.attempt,
                extra={"event": "cancelled_result_discarded", "run_id": outcome.task.run_id},
            )
        log_outcome(outcome)
        self._reporter.put(outcome)
        # Its slot is free: the loop may claim more while the report is being committed.
        self._done_tasks.put(outcome.task)
        self._wake()

    def _on_reported(self, done: list[tuple[Outcome, ReportResult]]) -> None:
        """Called by the reporter thread after a batch committed."""
        self._reported.put(done)
        # The loop may be waiting for the report backlog to shrink before it claims more.
        self._wakeup.set()

    def _on_connection_lost(self) -> None:
        """A connection of the worker broke: reports or claims committed just before may be lost
        (commits are asynchronous), so once the database is back, tasks the database says we
        started but we no longer hold are handed back (at-least-once)."""
        self._claims.needs_reconcile = True

    def _drain_reported(self) -> None:
        self._hand_back_not_started()
        finished = _take_all(self._done_tasks)
        self._held -= len(finished)
        if finished and self._source is not None:
            self._source.ack([task.delivery for task in finished])
        for done in _take_all(self._reported):
            for outcome, result in done:
                self._claims.forget(outcome.task)
                self.stats.count_report(result)

    def _hand_back_not_started(self) -> None:
        tasks = _take_all(self._not_started)
        if not tasks:
            return
        self._held -= len(tasks)
        self.stats.not_started += len(tasks)
        if self._source is not None:
            self._source.ack([t.delivery for t in tasks])
        try:
            self._claims.hand_back(tasks)
        except PgFlowError as exc:
            log.error("could not hand back %d task(s): %s", len(tasks), exc)

    def _wake(self) -> None:
        self._wakeup.set()
        if self._source is not None:
            self._source.wake()


def _take_all(items: queue.SimpleQueue[Item]) -> list[Item]:
    """What ``items`` holds now, taken without waiting."""
    taken: list[Item] = []
    while True:
        try:
            taken.append(items.get_nowait())
        except queue.Empty:
            return taken
