"""PgFlow(eager=True): flows and tasks run in the caller's thread, with no database at all."""

from __future__ import annotations

from typing import Any

import pytest

from pgflow_kombu import PgFlow, RunFailed
from pgflow_kombu.errors import ConfigurationError, FlowNotFound, StepInputError


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
    assert handle.get() == {"add": 5}
    assert handle.wait().output == {"add": 5}


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
        square.delay("not a number")


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
