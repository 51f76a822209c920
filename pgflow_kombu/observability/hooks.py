"""Hooks: callbacks on what a worker does, in the spirit of Celery's signals.

Register a function for an event on ``app.hooks`` (every worker the app starts, and the
``pgflow-kombu worker`` command serving the app, calls it) or on one worker's ``worker.hooks``::

    @app.hooks.on_task_failed
    def page_someone(event: TaskFailed) -> None: ...

    app.hooks.on("run_completed", lambda event: ...)

Events and where they are called (keep callbacks fast: they run on the worker's own threads):

==================  ==========================================================================
task_started        a slot starts an attempt (the slot's thread; the pool thread that feeds
                    a child process for the process pool)
task_succeeded      the database accepted the attempt's output (the reporter thread, after
                    the report committed)
task_retried        the attempt failed and the task went back to the queue for another attempt
task_failed         the attempt failed and the task has no attempt left (its run failed), or
                    the database refused its output
run_completed       this worker's report completed the run's last step
run_failed          this worker's report failed the run
tasks_claimed       one claim statement started ``count`` tasks of a flow (the loop thread)
outcomes_reported   one report transaction settled ``count`` outcomes (the reporter thread)
==================  ==========================================================================

Outcome hooks fire once the database has settled the report, so they tell apart a retry from a
final failure and never fire for a report the database ignored (the attempt was no longer this
worker's: a timeout or stalled-task recovery took it back). Run hooks fire in the worker whose
report finished the run: exactly one worker, with the run's flow at hand. Runs finished
elsewhere (by a TypeScript worker, by ``start_flow`` itself for a flow with nothing to do) fire
no hook here; a client waiting on a run learns of it from the run-finished notification.

The ``pgflow-kombu worker -A pkg.module:app`` command calls the hooks of the app it loads (not
when ``-A`` names a module or a flow). An eager app (``PgFlow(eager=True)``) runs no worker and
calls no hook.

A callback that raises is logged (with its traceback) and the worker goes on. With no callback
registered for an event, the worker does not even build its payload.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "EVENTS",
    "ClaimBatch",
    "Hooks",
    "ReportBatch",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "TaskEvent",
    "TaskFailed",
    "TaskRetried",
    "TaskStarted",
    "TaskSucceeded",
]

log = logging.getLogger("pgflow_kombu.hooks")


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One attempt of one task: ``attempt`` counts from 1."""

    flow_slug: str
    step_slug: str
    task_index: int
    run_id: str
    attempt: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class TaskStarted(TaskEvent):
    pass


@dataclass(frozen=True, slots=True)
class TaskSucceeded(TaskEvent):
    duration: float  # seconds the handler ran


@dataclass(frozen=True, slots=True)
class TaskRetried(TaskEvent):
    duration: float
    error: str  # what pgflow stores: "<ExceptionType>: <message>"
    timed_out: bool


@dataclass(frozen=True, slots=True)
class TaskFailed(TaskEvent):
    duration: float
    error: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class RunEvent:
    flow_slug: str
    run_id: str


@dataclass(frozen=True, slots=True)
class RunCompleted(RunEvent):
    pass


@dataclass(frozen=True, slots=True)
class RunFailed(RunEvent):
    step_slug: str  # the step whose task failed the run
    error: str


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    flow_slug: str
    count: int


@dataclass(frozen=True, slots=True)
class ReportBatch:
    count: int


EVENTS: dict[str, type] = {
    "task_started": TaskStarted,
    "task_succeeded": TaskSucceeded,
    "task_retried": TaskRetried,
    "task_failed": TaskFailed,
    "run_completed": RunCompleted,
    "run_failed": RunFailed,
    "tasks_claimed": ClaimBatch,
    "outcomes_reported": ReportBatch,
}

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[[Any], object]


class Hooks:
    """Callbacks by event name. ``Hooks(parent)`` also calls ``parent``'s callbacks (after its
    own), which is how a worker's hooks include its app's. Thread-safe to register from any
    thread; callbacks registered while the worker runs take effect at its next event."""

    def __init__(self, parent: Hooks | None = None) -> None:
        self.parent = parent
        self._own: dict[str, tuple[Callback, ...]] = {}
        self._lock = threading.Lock()

    def on(self, event: str, fn: F | None = None) -> Any:
        """Register ``fn`` for ``event``; without ``fn``, a decorator. Returns ``fn``."""
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}: choose one of {', '.join(EVENTS)}")
        if fn is None:
            return lambda f: self.on(event, f)
        if not callable(fn):
            raise TypeError(f"a hook must be callable, not {fn!r}")
        with self._lock:
            self._own[event] = (*self._own.get(event, ()), fn)
        return fn

    def remove(self, event: str, fn: Callable[..., Any]) -> None:
        with self._lock:
            self._own[event] = tuple(f for f in self._own.get(event, ()) if f is not fn)

    def wants(self, event: str) -> bool:
        """Whether any callback listens to ``event`` (the worker checks before building it)."""
        hooks: Hooks | None = self
        while hooks is not None:
            if hooks._own.get(event):
                return True
            hooks = hooks.parent
        return False

    def listeners(self, event: str) -> tuple[Callback, ...]:
        own = self._own.get(event, ())
        return own + self.parent.listeners(event) if self.parent is not None else own

    def emit(self, event: str, payload: object) -> None:
        """Call every callback of ``event``; one that raises is logged and the others still run."""
        for fn in self.listeners(event):
            try:
                fn(payload)
            except Exception:
                log.exception(
                    "hook %s for %s raised (ignored)",
                    getattr(fn, "__qualname__", fn),
                    event,
                    extra={"event": "hook_failed", "hook_event": event},
                )

    # Named registration, one per event (decorator-friendly: each returns ``fn``).
    def on_task_started(
        self, fn: Callable[[TaskStarted], object]
    ) -> Callable[[TaskStarted], object]:
        return self.on("task_started", fn)  # type: ignore[no-any-return]

    def on_task_succeeded(
        self, fn: Callable[[TaskSucceeded], object]
    ) -> Callable[[TaskSucceeded], object]:
        return self.on("task_succeeded", fn)  # type: ignore[no-any-return]

    def on_task_retried(
        self, fn: Callable[[TaskRetried], object]
    ) -> Callable[[TaskRetried], object]:
        return self.on("task_retried", fn)  # type: ignore[no-any-return]

    def on_task_failed(self, fn: Callable[[TaskFailed], object]) -> Callable[[TaskFailed], object]:
        return self.on("task_failed", fn)  # type: ignore[no-any-return]

    def on_run_completed(
        self, fn: Callable[[RunCompleted], object]
    ) -> Callable[[RunCompleted], object]:
        return self.on("run_completed", fn)  # type: ignore[no-any-return]

    def on_run_failed(self, fn: Callable[[RunFailed], object]) -> Callable[[RunFailed], object]:
        return self.on("run_failed", fn)  # type: ignore[no-any-return]

    def on_tasks_claimed(
        self, fn: Callable[[ClaimBatch], object]
    ) -> Callable[[ClaimBatch], object]:
        return self.on("tasks_claimed", fn)  # type: ignore[no-any-return]

    def on_outcomes_reported(
        self, fn: Callable[[ReportBatch], object]
    ) -> Callable[[ReportBatch], object]:
        return self.on("outcomes_reported", fn)  # type: ignore[no-any-return]
