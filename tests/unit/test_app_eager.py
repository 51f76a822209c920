"""PgFlow(eager=True): flows and tasks run in the caller's thread, with no database at all."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pgflow_kombu import PgFlow, RunFailed
from pgflow_kombu.errors import (
    ConfigurationError,
    FlowInputError,
    FlowNotFound,
    StepFailed,
    StepInputError,
)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> PgFlow:
    monkeypatch.delenv("PGFLOW_DATABASE_URL", raising=False)
    return PgFlow(eager=True)


def test_tasks_delay_returns_a_finished_handle(app: PgFlow) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.delay(2, 3)
    assert handle.status == "completed"
    assert handle.get() == 5  # the function's value, as Celery's AsyncResult.get()
    assert handle.output == {"add": 5}  # the run output keeps pgflow's shape
    assert handle.wait().output == {"add": 5}
    assert add.apply_async((1, 1)).get() == 2
    assert app.enqueue("add", {"a": 1, "b": 2}).get() == {"add": 3}  # a run, not the task


def test_flow_failures_surface_as_run_failed(app: PgFlow) -> None:
    flow = app.flow("fails")

    @flow.step
    def boom(run: dict[str, Any]) -> None:
        raise RuntimeError("kaput")

    handle = flow.start({})
    assert handle.status == "failed"
    with pytest.raises(RunFailed, match="kaput"):
        handle.wait()


def test_input_is_validated_before_running(app: PgFlow) -> None:
    @app.task
    def square(n: int) -> int:
        return n * n

    with pytest.raises(
        StepInputError, match="step 'square': invalid input n: Input should be a valid integer"
    ):
        square.delay("not a number")  # type: ignore[arg-type]


def test_duplicate_slugs_are_refused(app: PgFlow) -> None:
    app.flow("same")
    with pytest.raises(ConfigurationError, match="already registered"):
        app.flow("same")


def test_start_flow_sync_runs_eagerly_without_a_database(app: PgFlow) -> None:
    flow = app.flow("sync_eager")

    @flow.step
    def double(run: int) -> int:
        return run * 2

    @app.task
    def fails(n: int) -> None:
        raise ValueError(f"bad {n}")

    run = app.start_flow_sync(flow, 21)
    assert run.status == "completed"
    assert run.output == {"double": 42}
    assert app.start_flow_sync("sync_eager", 1, timeout=1).output == {"double": 2}
    with pytest.raises(RunFailed, match="bad 3") as failed:
        app.start_flow_sync(fails, {"n": 3})
    assert failed.value.run.status == "failed"  # type: ignore[attr-defined]
    with pytest.raises(FlowNotFound, match="eager app runs only its own flows"):
        app.start_flow_sync("defined_elsewhere", {})


def test_a_flow_belongs_to_one_app(app: PgFlow) -> None:
    from pgflow_kombu.flows import Flow, task

    other = PgFlow(eager=True)
    flow = Flow("owned")

    @flow.step
    def one(run: int) -> int:
        return run

    app.register(flow)
    app.register(flow)  # again with its own app: nothing changes
    with pytest.raises(
        ConfigurationError, match=r"flow 'owned' is already registered with <PgFlow"
    ):
        other.register(flow)
    assert flow.dispatcher is app
    assert "owned" not in other.flows

    @task
    def lone(n: int) -> int:
        return n

    other.register(lone)
    with pytest.raises(ConfigurationError, match="flow 'lone' is already registered with") as err:
        app.register(lone)
    assert repr(other) in str(err.value) and repr(app) in str(err.value)
    assert "lone" not in app.flows and lone.flow.dispatcher is other


def test_eager_runs_retry_as_a_worker_would(app: PgFlow) -> None:
    calls: list[int] = []

    @app.task(max_attempts=3)
    def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return n

    assert flaky.delay(7).get() == 7
    assert calls == [7, 7, 7]

    calls.clear()

    @app.task(max_attempts=2)
    def hopeless(n: int) -> int:
        calls.append(n)
        raise ValueError("never")

    handle = hopeless.delay(1)
    assert calls == [1, 1]  # max_attempts, not one
    with pytest.raises(RunFailed, match=r"failed: ValueError: never") as failed:
        handle.get()
    assert isinstance(failed.value.__cause__, StepFailed)
    assert "after 2 attempts" in str(failed.value.__cause__)
    run = handle.wait(raise_on_failure=False)
    assert run.status == "failed" and run.error_message == "ValueError: never"
    assert [e.event_type for e in handle.events()] == ["run:started", "step:failed", "run:failed"]


def test_eager_runs_honour_run_id_and_idempotency_keys(app: PgFlow) -> None:
    calls: list[int] = []

    @app.task
    def once(n: int) -> int:
        calls.append(n)
        return n

    run_id = uuid.uuid4()
    handle = app.start_flow(once, {"n": 1}, run_id=run_id)
    assert handle.run_id == run_id and handle.refresh().run_id == run_id
    first = once.apply_async((2,), idempotency_key="k")
    again = once.apply_async((3,), idempotency_key="k")
    assert again.run_id == first.run_id and again.get() == 2
    assert calls == [1, 2]
    with pytest.raises(FlowInputError, match="idempotency_key must be a non-empty string"):
        once.apply_async((4,), idempotency_key="")


def test_eager_start_many_honours_idempotency_keys(app: PgFlow) -> None:
    calls: list[int] = []

    @app.task
    def each(n: int) -> int:
        calls.append(n)
        return n

    first = app.start_flow(each, {"n": 1}, idempotency_key="a")
    handles = app.start_many(
        each, [{"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}], idempotency_keys=["a", "b", None, "b"]
    )
    assert handles[0].run_id == first.run_id
    assert handles[3].run_id == handles[1].run_id != handles[2].run_id
    assert [h.get() for h in handles] == [1, 3, 4, 3]  # a task's handles give its value
    assert [h.output for h in handles] == [{"each": n} for n in (1, 3, 4, 3)]
    assert calls == [1, 3, 4]
    with pytest.raises(FlowInputError, match=r"idempotency_keys\[1\] .* got ''"):
        app.start_many(each, [{"n": 6}, {"n": 7}], idempotency_keys=["c", ""])
    assert calls == [1, 3, 4]  # nothing ran


def test_eager_runs_refuse_what_they_cannot_honour(app: PgFlow) -> None:
    @app.task
    def later(n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match=r"flow 'later'.*cannot delay.*countdown=5"):
        later.apply_async((1,), countdown=5)
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(ConfigurationError, match="cannot delay"):
        later.apply_async((1,), eta=future)
    with pytest.raises(ConfigurationError, match="cannot delay"):
        app.enqueue_in(later, {"n": 1}, 30)
    # No delay, or a time already past, means now (as in production).
    assert later.apply_async((1,), countdown=0).get() == 1
    assert later.apply_async((2,), eta=datetime.now(timezone.utc) - timedelta(seconds=5)).get() == 2
    with pytest.raises(ConfigurationError, match=r"no database.*connection="):
        app.start_flow(later, {"n": 1}, connection=object())  # type: ignore[arg-type]
    with pytest.raises(FlowInputError, match="delay must be >= 0"):
        later.apply_async((1,), countdown=-1)  # the same checks as production


def test_eager_and_real_handles_are_one_type(app: PgFlow) -> None:
    from pgflow_kombu import RunHandle

    flow = app.flow("typed")

    @flow.step
    def one(run: int) -> int:
        return run + 1

    handle = flow.start(1)
    assert isinstance(handle, RunHandle)
    assert type(handle) is RunHandle
    assert [e.event_type for e in handle.events()] == [
        "run:started",
        "step:completed",
        "run:completed",
    ]
