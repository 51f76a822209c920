"""Reporting finished attempts in groups: many ``complete_task``/``fail_task`` per commit.

Outcomes queue up while reports are in flight; each reporter connection takes everything queued
(up to ``batch_size``) into one call of ``pgflow_kombu.report_tasks``, one transaction. So an
idle worker reports each task at once, and a busy one shares a commit between many tasks without
waiting for a timer. Two connections by default, so that one batch's commit overlaps the next
batch's work (the database runs ``complete_task`` on one core per connection). The function
applies each report only to the attempt it names, which makes re-sending a batch after a lost
connection harmless (rows already applied come back 'stale').
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from psycopg.types.json import Jsonb
from typing_extensions import assert_never

from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import PgFlowError
from pgflow_kombu.settings import WORKER_DEFAULTS
from pgflow_kombu.worker.connectivity import Connectivity
from pgflow_kombu.worker.link import Link, is_connection_error
from pgflow_kombu.worker.tasks import Outcome, ReportResult

__all__ = ["ReportRow", "Reporter", "parse_report_rows"]

log = logging.getLogger("pgflow_kombu.worker")

DEFAULT_CONNECTIONS = 2

Reported = Callable[[list[tuple[Outcome, ReportResult]]], None]
# Reports the database applied, with what followed (see worker/events.py): for the hooks.
Settled = Callable[[list[tuple[Outcome, ReportResult, "bool | None", "str | None"]]], None]


class ReportRow(NamedTuple):
    """One row of ``pgflow_kombu.report_tasks``: what became of the ``ordinal``-th report."""

    ordinal: int
    result: ReportResult
    detail: str | None
    retrying: bool | None
    run_status: str | None


def parse_report_rows(rows: Sequence[tuple[Any, ...]]) -> list[ReportRow]:
    """The rows as the database returned them, typed (an unknown outcome raises
    :class:`~pgflow_kombu.errors.UnexpectedReply`)."""
    return [
        ReportRow(ordinal, ReportResult.parse(result), detail, retrying, run_status)
        for ordinal, result, detail, retrying, run_status in rows
    ]


class Reporter:
    def __init__(
        self,
        url: str,
        on_reported: Reported,
        *,
        batch_size: int = WORKER_DEFAULTS.report_batch,
        connections: int = DEFAULT_CONNECTIONS,
        synchronous_commit: bool = True,
        on_connection_lost: Callable[[], None] | None = None,
        on_settled: Settled | None = None,
        statement_timeout: float | None = None,
        connectivity: Connectivity | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.batches = 0
        self.reported = 0
        self.retried = 0  # reports sent again after a transient conflict ('retry')
        self._on_reported = on_reported
        self._on_connection_lost = on_connection_lost
        self._on_settled = on_settled
        self._links = [
            Link(
                url,
                application_name="pgflow-kombu-reporter",
                synchronous_commit=synchronous_commit,
                statement_timeout=statement_timeout,
                connectivity=connectivity,
            )
            for _ in range(max(1, connections))
        ]
        self._queue: deque[Outcome] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandon_at: float | None = None
        self._in_flight = 0
        self._threads = [
            threading.Thread(
                target=self._run, args=(link,), name=f"pgflow-reporter-{i + 1}", daemon=True
            )
            for i, link in enumerate(self._links)
        ]
        self._started = False

    def start(self) -> None:
        self._started = True
        for thread in self._threads:
            thread.start()

    def put(self, outcome: Outcome) -> None:
        with self._cond:
            self._queue.append(outcome)
            self._cond.notify()

    @property
    def backlog(self) -> int:
        """Outcomes queued or being reported."""
        return len(self._queue) + self._in_flight

    def stop(self, timeout: float) -> int:
        """Report what is queued (trying for up to ``timeout`` s), then stop.

        Returns how many outcomes could not be reported (left for stalled-task recovery).
        """
        with self._cond:
            self._closing = True
            self._abandon_at = time.monotonic() + timeout
            self._cond.notify_all()
        if self._started:
            for thread in self._threads:
                thread.join(max(0.0, self._abandon_at - time.monotonic()) + 5)
        for link in self._links:
            link.close()
        return self.backlog

    def _take(self) -> list[Outcome]:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return []
                self._cond.wait()
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight += n
            return batch

    def _abandoned(self) -> bool:
        return self._abandon_at is not None and time.monotonic() >= self._abandon_at

    def _run(self, link: Link) -> None:
        delay = 0.05
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                rows = parse_report_rows(
                    link.fetch(
                        query("worker.report_tasks"),
                        {"reports": Jsonb([o.report() for o in batch])},
                    )
                )
            except PgFlowError as exc:
                self._requeue(batch)
                if is_connection_error(exc) and self._on_connection_lost is not None:
                    self._on_connection_lost()
                if self._abandoned():
                    return
                # A lost connection is logged once for the whole worker (connectivity.py).
                level = logging.DEBUG if is_connection_error(exc) else logging.ERROR
                log.log(
                    level if delay == 0.05 else logging.DEBUG,
                    "could not report %d outcome(s), retrying: %s",
                    len(batch),
                    exc,
                    extra={"event": "report_failed"},
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:
                log.exception("reporter error; retrying")
                self._requeue(batch)
                time.sleep(1.0)
                continue
            delay = 0.05
            self._settle(batch, rows)

    def _requeue(self, outcomes: list[Outcome]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(outcomes))
            self._in_flight -= len(outcomes)
            self._cond.notify()

    def _settle(self, batch: list[Outcome], rows: list[ReportRow]) -> None:
        done: list[tuple[Outcome, ReportResult]] = []
        applied: list[tuple[Outcome, ReportResult, bool | None, str | None]] = []
        retry: list[Outcome] = []
        for ordinal, result, detail, retrying, run_status in rows:
            outcome = batch[ordinal - 1]
            task = outcome.task
            match result:
                case ReportResult.RETRY:
                    # A transient conflict (lock timeout, deadlock, cancelled statement) undid
                    # only this report: it goes out again with the next batch.
                    log.debug(
                        "report of %s (run %s, attempt %d) will be sent again: %s",
                        task.label,
                        task.run_id,
                        task.attempt,
                        detail,
                        extra={"event": "report_retry", "run_id": task.run_id},
                    )
                    retry.append(outcome)
                    continue
                case ReportResult.STALE:
                    log.info(
                        "report of %s (run %s, attempt %d) ignored: the attempt is no longer "
                        "this worker's (%s)",
                        task.label,
                        task.run_id,
                        task.attempt,
                        detail,
                        extra={"event": "report_stale", "run_id": task.run_id},
                    )
                case ReportResult.REJECTED:
                    log.error(
                        "report of %s (run %s) was rejected by the database: %s",
                        task.label,
                        task.run_id,
                        detail,
                        extra={"event": "report_rejected", "run_id": task.run_id},
                    )
                    applied.append((outcome, result, retrying, run_status))
                case ReportResult.COMPLETED | ReportResult.FAILED:
                    applied.append((outcome, result, retrying, run_status))
                case _:
                    assert_never(result)
            done.append((outcome, result))
        with self._cond:
            self._in_flight -= len(batch)
            if retry:
                self._queue.extendleft(reversed(retry))
                self.retried += len(retry)
                self._cond.notify()
            self.batches += 1
            self.reported += len(done)
        if done:
            self._on_reported(done)
        if self._on_settled is not None:
            try:
                self._on_settled(applied)
            except Exception:
                log.exception("reporter callback failed")
