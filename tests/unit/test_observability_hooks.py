"""Hooks without a database: registration, parents, failing callbacks, the events' payloads."""

from __future__ import annotations

import logging
import uuid

import pytest

from pgflow_kombu.observability import Hooks, RunCompleted, RunFailed, TaskRetried, TaskStarted
from pgflow_kombu.worker.events import WorkerEvents
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome, ReportResult


def claimed(attempt: int = 1) -> ClaimedTask:
    return ClaimedTask("f", str(uuid.uuid4()), "s", 2, 7, None, attempt, 30.0, "w-1")


def test_unknown_event_and_non_callable_are_refused() -> None:
    hooks = Hooks()
    with pytest.raises(ValueError, match="unknown hook event 'task_done'"):
        hooks.on("task_done", print)
    with pytest.raises(TypeError):
        hooks.on("task_started", 42)  # type: ignore[arg-type]


def test_parent_callbacks_run_after_own_and_removal_works() -> None:
    app, calls = Hooks(), []
    worker = Hooks(app)
    app.on("task_started", lambda e: calls.append("app"))
    own = worker.on_task_started(lambda e: calls.append("worker"))
    assert worker.wants("task_started") and not worker.wants("run_failed")
    worker.emit("task_started", object())
    assert calls == ["worker", "app"]
    worker.remove("task_started", own)
    worker.emit("task_started", object())
    assert calls == ["worker", "app", "app"]


def test_a_raising_callback_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks, calls = Hooks(), list[object]()

    @hooks.on("run_completed")
    def broken(event: object) -> None:
        raise RuntimeError("boom")

    hooks.on("run_completed", calls.append)
    with caplog.at_level(logging.ERROR, logger="pgflow_kombu.hooks"):
        hooks.emit("run_completed", "payload")
    assert calls == ["payload"]
    (record,) = caplog.records
    assert "broken" in record.getMessage() and record.exc_info is not None


def test_worker_events_tell_retries_from_final_failures_and_finished_runs() -> None:
    hooks, seen = Hooks(), list[object]()
    for name in ("task_started", "task_retried", "task_failed", "run_failed", "run_completed"):
        hooks.on(name, seen.append)
    events = WorkerEvents(hooks)
    first, second = claimed(1), claimed(2)
    events.task_started(first)
    events.settled(
        [
            (Outcome(first, error="E: x", duration=0.5), ReportResult.FAILED, True, None),
            (
                Outcome(second, error="E: y", timed_out=True, duration=1.0),
                ReportResult.FAILED,
                False,
                "failed",
            ),
        ]
    )
    assert seen[0] == TaskStarted("f", "s", 2, first.run_id, 1, "w-1")
    assert seen[1] == TaskRetried("f", "s", 2, first.run_id, 1, "w-1", 0.5, "E: x", False)
    assert [type(e).__name__ for e in seen[2:]] == ["TaskFailed", "RunFailed"]
    assert seen[3] == RunFailed("f", second.run_id, "s", "E: y")
    events.settled([(Outcome(first, output=1), ReportResult.COMPLETED, None, "completed")])
    assert seen[-1] == RunCompleted("f", first.run_id)


def test_nothing_is_built_without_callbacks() -> None:
    class Exploding(Hooks):
        def emit(self, event: str, payload: object) -> None:
            raise AssertionError(f"emitted {event} with no callback")

    events = WorkerEvents(Exploding())
    events.task_started(claimed())
    events.claimed([claimed()])
    events.settled([(Outcome(claimed(), output=1), ReportResult.COMPLETED, None, "completed")])
