"""Claiming tasks, and knowing which claimed tasks this worker holds.

By default one ``pgflow_kombu.read_and_claim`` per cycle reads the flow queues and claims the
tasks behind what it read (:meth:`Claims.read_and_claim`). With a message source that delivers
messages itself, one ``pgflow_kombu.claim_tasks`` per flow per drain cycle turns delivered
messages into started tasks (attempt counted, visibility set); a message with no queued task is
acknowledged and left alone. Knowing what it holds lets the worker repair the two ways a claim can go astray:

* the connection broke during a claim, which may have committed: once the database is back,
  tasks the database says we started but that we do not hold are handed back
  (:meth:`Claims.reconcile`), and the messages not yet claimed are claimed again;
* a stop: claimed tasks that never started are handed back (:meth:`Claims.release`), as if
  never claimed (the attempt is not counted), instead of waiting for stalled-task recovery;
* a claimed task that may no longer be ours (no heartbeat went through for nearly
  ``stalled_after``, so recovery may have given it to another worker) is never started: it is
  handed back if it still is ours (:meth:`Claims.hand_back`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from psycopg.types.json import Jsonb

from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.worker.connectivity import Connectivity
from pgflow_kombu.worker.link import Link, is_connection_error
from pgflow_kombu.worker.source import Delivery, MessageSource
from pgflow_kombu.worker.status import WorkerStats
from pgflow_kombu.worker.tasks import ClaimedTask

__all__ = ["MIN_READ_VISIBILITY", "Claims", "read_visibility"]

log = logging.getLogger("pgflow_kombu.worker")

MIN_READ_VISIBILITY = 2

TaskKey = tuple[str, str, int]


def _key(task: ClaimedTask) -> TaskKey:
    return (task.run_id, task.step_slug, task.task_index)


def read_visibility(stalled_after: float) -> int:
    """Seconds a read message stays hidden before it is claimed: about ``stalled_after``, so that
    a worker cut off between its read and its claim delays those tasks no longer than a dead
    worker delays its claimed ones (the claim extends the visibility of a step that may run
    longer to its timeout + 2 s)."""
    return max(MIN_READ_VISIBILITY, math.ceil(stalled_after))


class Claims:
    """Used from the worker's loop thread only."""

    def __init__(
        self,
        url: str,
        worker_ids: Mapping[str, str],
        stats: WorkerStats,
        *,
        synchronous_commit: bool = False,
        statement_timeout: float | None = None,
        connectivity: Connectivity | None = None,
    ) -> None:
        self.worker_ids = worker_ids
        self.stats = stats
        self.link = Link(
            url,
            application_name="pgflow-kombu-claims",
            synchronous_commit=synchronous_commit,
            statement_timeout=statement_timeout,
            connectivity=connectivity,
        )
        self.needs_reconcile = False
        self._unclaimed: list[Delivery] = []
        self._holding: dict[TaskKey, ClaimedTask] = {}

    def close(self) -> None:
        self.link.close()

    # -- claiming ------------------------------------------------------------------------------

    def hand_back(self, tasks: list[ClaimedTask]) -> None:
        """Tasks that will not start (their claim may be lost): hand back those still ours,
        or, when the database cannot be reached, leave them to :meth:`reconcile` once it is."""
        for task in tasks:
            self.forget(task)
        try:
            released = self._release([t.identity() for t in tasks])
        except PgFlowError as exc:
            if not is_connection_error(exc):
                raise
            self.needs_reconcile = True
            return
        self.stats.released += released

    def pending_retry(self) -> list[Delivery]:
        """Messages read before a connection broke and not claimed: still hidden for us."""
        retry, self._unclaimed = self._unclaimed, []
        return retry

    def claim(
        self,
        source: MessageSource,
        deliveries: list[Delivery],
        submit: Callable[[list[ClaimedTask]], None],
    ) -> None:
        """Claim what the deliveries stand for, one statement per flow; each flow's claimed
        tasks go to ``submit`` at once (so a later flow's failure loses none of them)."""
        by_queue: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_queue[delivery.queue].append(delivery)
        batches = list(by_queue.items())
        for position, (flow_slug, batch) in enumerate(batches):
            try:
                tasks = self._claim_flow(source, flow_slug, batch)
            except PgFlowError as exc:
                rest = [d for _q, b in batches[position:] for d in b]
                if is_connection_error(exc):
                    # The claim may have committed before the connection broke.
                    self.needs_reconcile = True
                    self._unclaimed = rest
                else:
                    source.ack([d.handle for d in rest])  # back after their visibility
                raise
            if tasks:
                submit(tasks)

    def _claim_flow(
        self, source: MessageSource, flow_slug: str, batch: list[Delivery]
    ) -> list[ClaimedTask]:
        worker_id = self.worker_ids.get(flow_slug)
        if worker_id is None:  # not a queue we serve: leave it alone
            source.ack([d.handle for d in batch])
            return []
        by_id = {d.msg_id: d for d in batch}
        rows = self.link.fetch(
            query("worker.claim_tasks"),
            {
                "flow_slug": flow_slug,
                "msg_ids": list(by_id),
                "worker_id": worker_id,
                "read_visibility": source.read_visibility,
            },
        )
        tasks = self._held_tasks([(flow_slug, *row) for row in rows])
        for task in tasks:
            task.delivery = by_id.pop(task.msg_id).handle
        if by_id:
            self.stats.unclaimed += len(by_id)
            source.ack([d.handle for d in by_id.values()])
        return tasks

    def read_and_claim(
        self, flow_slugs: list[str], limit: int, read_visibility: int
    ) -> list[ClaimedTask]:
        """Read up to ``limit`` messages of these flow queues (in this order) and claim their
        tasks, in one statement (``pgflow_kombu.read_and_claim``)."""
        try:
            rows = self.link.fetch(
                query("worker.read_and_claim"),
                {
                    "flow_slugs": flow_slugs,
                    "worker_ids": [self.worker_ids[slug] for slug in flow_slugs],
                    "qty": limit,
                    "read_visibility": read_visibility,
                },
            )
        except PgFlowError as exc:
            if is_connection_error(exc):
                self.needs_reconcile = True  # the claim may have committed
            raise
        return self._held_tasks(rows)

    def _held_tasks(self, rows: list[Any]) -> list[ClaimedTask]:
        """The claimed tasks of a claim's rows, now held by this worker."""
        self.stats.claim_batches += 1
        tasks = []
        for flow_slug, run_id, step_slug, task_index, msg_id, task_input, attempt, timeout in rows:
            task = ClaimedTask(
                flow_slug=flow_slug,
                run_id=str(run_id),
                step_slug=step_slug,
                task_index=task_index,
                msg_id=msg_id,
                input=task_input,
                attempt=attempt,
                timeout=float(timeout),
                worker_id=self.worker_ids[flow_slug],
            )
            self._holding[_key(task)] = task
            tasks.append(task)
        self.stats.claimed += len(tasks)
        return tasks

    def forget(self, task: ClaimedTask) -> None:
        """The task's outcome was reported: it is no longer ours to hand back."""
        self._holding.pop(_key(task), None)

    # -- handing back --------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Hand back tasks the database says we started but that we do not hold."""
        rows = self.link.fetch(
            query("worker.held_tasks"), {"worker_ids": list(self.worker_ids.values())}
        )
        orphans = [
            {
                "run_id": str(run_id),
                "step_slug": step_slug,
                "task_index": task_index,
                "attempt": attempts,
                "worker_id": str(worker_id),
            }
            for run_id, step_slug, task_index, attempts, worker_id in rows
            if (str(run_id), step_slug, task_index) not in self._holding
        ]
        released = self._release(orphans) if orphans else 0
        if released:
            self.stats.released += released
            log.warning(
                "handed back %d task(s) whose claim or report was lost with the connection",
                released,
                extra={"event": "tasks_reconciled", "count": released},
            )
        self.needs_reconcile = False
        return released

    def release(self, tasks: list[ClaimedTask], attempts: int = 3) -> bool:
        """Hand back claimed tasks that never started; False when the database was unreachable
        (they are then left to stalled-task recovery)."""
        payload = [t.identity() for t in tasks]
        for attempt in range(attempts):
            try:
                released = self._release(payload)
            except PgFlowError as exc:
                log.warning("could not hand back %d unstarted task(s): %s", len(tasks), exc)
                time.sleep(0.5 * (attempt + 1))
                continue
            self.stats.released += released
            for task in tasks:
                self.forget(task)
            log.info(
                "handed back %d claimed task(s) that had not started",
                released,
                extra={"event": "tasks_released", "count": released},
            )
            return True
        return False

    def _release(self, payload: list[dict[str, Any]]) -> int:
        rows = self.link.fetch(query("worker.release_tasks"), {"tasks": Jsonb(payload)})
        return int(rows[0][0]) if rows and rows[0][0] else 0
