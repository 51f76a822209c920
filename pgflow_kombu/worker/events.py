"""The worker's side of the hooks: turns what it holds (claimed tasks, outcomes, settled reports)
into the typed events of :mod:`pgflow_kombu.observability.hooks`, only for events someone
listens to (with none registered, each call is a dictionary look-up or two)."""

from __future__ import annotations

from collections.abc import Sequence

from typing_extensions import assert_never

from pgflow_kombu.observability.hooks import (
    ClaimBatch,
    Hooks,
    ReportBatch,
    RunCompleted,
    RunFailed,
    TaskFailed,
    TaskRetried,
    TaskStarted,
    TaskSucceeded,
)
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome, ReportResult

__all__ = ["Settled", "WorkerEvents"]

# A report the database applied: the outcome, its result (completed, failed or rejected),
# whether the task was queued again, and the run's status after it.
Settled = tuple[Outcome, ReportResult, "bool | None", "str | None"]

_OUTCOME_EVENTS = ("task_succeeded", "task_retried", "task_failed", "run_completed", "run_failed")


class WorkerEvents:
    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def task_started(self, task: ClaimedTask) -> None:
        if self.hooks.wants("task_started"):
            self.hooks.emit(
                "task_started",
                TaskStarted(
                    task.flow_slug,
                    task.step_slug,
                    task.task_index,
                    task.run_id,
                    task.attempt,
                    task.worker_id,
                ),
            )

    def claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        if tasks and self.hooks.wants("tasks_claimed"):
            self.hooks.emit("tasks_claimed", ClaimBatch(tasks[0].flow_slug, len(tasks)))

    def settled(self, reports: Sequence[Settled]) -> None:
        """Called by the reporter thread once a batch committed (stale reports left out)."""
        hooks = self.hooks
        if hooks.wants("outcomes_reported"):
            hooks.emit("outcomes_reported", ReportBatch(len(reports)))
        if not any(hooks.wants(e) for e in _OUTCOME_EVENTS):
            return
        for outcome, result, retrying, run_status in reports:
            self._settled(outcome, result, retrying, run_status)

    def _settled(
        self, outcome: Outcome, result: ReportResult, retrying: bool | None, run_status: str | None
    ) -> None:
        task = outcome.task
        ident = (
            task.flow_slug,
            task.step_slug,
            task.task_index,
            task.run_id,
            task.attempt,
            task.worker_id,
        )
        error = outcome.error
        match result:
            case ReportResult.COMPLETED:
                self.hooks.emit("task_succeeded", TaskSucceeded(*ident, outcome.duration))
                if run_status == "completed" and self.hooks.wants("run_completed"):
                    self.hooks.emit("run_completed", RunCompleted(task.flow_slug, task.run_id))
                return
            case ReportResult.FAILED | ReportResult.REJECTED:
                pass  # rejected: the output could not be stored and the attempt failed
            case ReportResult.STALE | ReportResult.RETRY:
                return  # changed nothing (the reporter does not pass these on)
            case _:
                assert_never(result)
        if error is None:
            error = "complete_task failed: the database refused the output"
        if retrying:
            self.hooks.emit(
                "task_retried", TaskRetried(*ident, outcome.duration, error, outcome.timed_out)
            )
            return
        self.hooks.emit(
            "task_failed", TaskFailed(*ident, outcome.duration, error, outcome.timed_out)
        )
        if run_status == "failed" and self.hooks.wants("run_failed"):
            self.hooks.emit(
                "run_failed", RunFailed(task.flow_slug, task.run_id, task.step_slug, error)
            )
