"""Typed views of pgflow's rows: what ``get_run`` and friends return."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

__all__ = [
    "JSON",
    "FlowInfo",
    "PruneResult",
    "Run",
    "RunEvent",
    "RunEventType",
    "RunPage",
    "RunStatus",
    "ScheduleInfo",
    "ScheduleTick",
    "StepState",
    "StepStatus",
    "StepTask",
    "TaskStatus",
    "WorkerInfo",
]

JSON = Any
RunStatus = Literal["started", "completed", "failed", "cancelled"]
"""pgflow's run statuses, plus ``cancelled``: a run cancelled through this package (pgflow's row
says ``failed``; see ``pgflow_kombu.cancelled_runs``)."""
StepStatus = Literal["created", "started", "completed", "failed", "skipped"]
TaskStatus = Literal["queued", "started", "completed", "failed"]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class StepTask(_Row):
    """One task of a step: a single step has one, a map step one per array element."""

    run_id: UUID
    flow_slug: str
    step_slug: str
    task_index: int
    status: TaskStatus
    attempts_count: int
    message_id: int | None = None
    output: JSON = None
    error_message: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    last_worker_id: UUID | None = None


class StepState(_Row):
    """The state of one step within a run.

    ``status`` ``"skipped"`` (with ``skip_reason``) is pgflow-kombu's view of a conditional step
    that did not run: pgflow's own row reads ``completed`` (see sql/migrations/0070_conditions).
    """

    run_id: UUID
    flow_slug: str
    step_slug: str
    status: StepStatus
    remaining_deps: int
    remaining_tasks: int | None = None
    initial_tasks: int | None = None
    error_message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    skip_reason: str | None = None
    tasks: tuple[StepTask, ...] = ()


class Run(_Row):
    """One execution of a flow. ``step_states`` is filled by ``get_run_with_states``."""

    run_id: UUID
    flow_slug: str
    status: RunStatus
    input: JSON = None
    output: JSON = None
    remaining_steps: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    step_states: tuple[StepState, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status != "started"

    @property
    def error_message(self) -> str | None:
        """The error of the first failed step (pgflow keeps no error on the run row)."""
        for state in self.step_states:
            if state.status == "failed" and state.error_message:
                return state.error_message
        return None


class PruneResult(_Row):
    """What ``prune`` deleted: finished runs (with their steps, tasks and messages) and
    archived queue messages older than the cut-off, and rate-limit buckets full again."""

    runs: int = 0
    archived_messages: int = 0
    rate_buckets: int = 0


class RunPage(_Row):
    """One page of :meth:`~pgflow_kombu.client.Client.find_runs`: newest first, and ``next``, the
    opaque cursor of the following page (``None`` on the last page)."""

    runs: list[Run]
    next: str | None = None


RunEventType = Literal[
    "run:started",
    "run:completed",
    "run:failed",
    "run:cancelled",
    "step:started",
    "step:completed",
    "step:failed",
    "step:skipped",
]


class RunEvent(_Row):
    """A change of a run or of one of its steps, as :meth:`~pgflow_kombu.client.Client.events`
    yields it. ``output`` is set on ``*:completed`` events when it is at most
    ``MAX_EVENT_OUTPUT`` bytes, else ``None`` with ``output_omitted`` true (read it with
    ``get_run_with_states``). ``step_slug`` is ``None`` on run events. A conditional step that
    was skipped gives ``step:skipped`` with its ``skip_reason``."""

    event_type: RunEventType
    run_id: UUID
    step_slug: str | None = None
    status: str
    output: JSON = None
    output_omitted: bool = False
    error_message: str | None = None
    skip_reason: str | None = None
    at: datetime | None = None


class WorkerInfo(_Row):
    worker_id: UUID
    queue_name: str
    function_name: str
    started_at: datetime
    last_heartbeat_at: datetime
    deprecated_at: datetime | None = None


class FlowInfo(_Row):
    """A flow as the database holds it."""

    flow_slug: str
    opt_max_attempts: int
    opt_base_delay: int
    opt_timeout: int
    created_at: datetime | None = None


class ScheduleInfo(_Row):
    """A schedule as the database holds it (see :mod:`pgflow_kombu.flows.schedules`)."""

    name: str
    flow_slug: str
    cron: str
    timezone: str
    input: JSON = None
    catch_up: str = "none"
    catch_up_limit: int = 100
    misfire_grace: float = 30.0
    source: str = "api"
    paused: bool = False
    removed_at: datetime | None = None
    next_tick_at: datetime
    last_tick_at: datetime | None = None
    last_run_id: UUID | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def status(self) -> str:
        """``active``, ``paused``, or ``removed`` (a code schedule the code no longer defines)."""
        if self.removed_at is not None:
            return "removed"
        return "paused" if self.paused else "active"


class ScheduleTick(_Row):
    """A tick of a schedule that was started (``manual``: triggered by hand)."""

    schedule_name: str
    tick_at: datetime
    manual: bool = False
    run_id: UUID | None = None
    started_at: datetime | None = None
