"""The app and client against a real database, with tasks driven by plain SQL (no worker)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import (
    ConfigurationError,
    FlowInputError,
    FlowMismatch,
    FlowNotFound,
    RunFailed,
    RunNotFound,
    RunTimeout,
)
from tests.support.sql import test_query
from tests.support.sqlworker import drain, queue_messages


class Order(BaseModel):
    order_id: int
    items: list[str]


@pytest.fixture
def app(db_url: str) -> Iterator[PgFlow]:
    application = PgFlow(db_url)
    yield application
    application.close()


def define_order_flow(app: PgFlow) -> Any:
    order = app.flow("order", max_attempts=2, base_delay=0)

    @order.step
    def validate(run: Order) -> Order:
        return run

    @order.step
    def items(validate: Order) -> list[str]:
        return validate.items

    @order.map(over="items")
    def ship(item: str) -> str:
        return item.upper()

    @order.step(depends_on=["ship", "validate"])
    def notify(ship: list[str], validate: Order) -> dict[str, Any]:
        return {"order": validate.order_id, "shipped": ship}

    return order


def run_steps(app: PgFlow, flow: Any) -> Any:
    """A handler for the SQL worker that calls the flow's real steps."""
    return lambda step_slug, task_input: flow.get_step(step_slug).execute(task_input)


def test_start_and_wait_for_a_flow_end_to_end(app: PgFlow, db_url: str) -> None:
    order = define_order_flow(app)
    handle = order.start({"order_id": 7, "items": ["a", "b"]})
    assert handle.status == "started"
    drain(db_url, "order", run_steps(app, order))
    run = handle.wait(timeout=10)
    assert run.status == "completed"
    assert run.output == {"notify": {"order": 7, "shipped": ["A", "B"]}}
    assert [s.step_slug for s in run.step_states] == ["validate", "items", "ship", "notify"]
    assert [t.output for t in run.step_states[2].tasks] == ["A", "B"]
    assert app.get_run(handle.run_id).status == "completed"


def test_wait_is_woken_by_notify_from_another_connection(app: PgFlow, db_url: str) -> None:
    order = define_order_flow(app)
    handle = order.start({"order_id": 1, "items": ["x"]})
    worker = threading.Timer(0.3, drain, args=(db_url, "order", run_steps(app, order)))
    worker.start()
    # poll_interval far beyond the timeout: only the notification can end this wait in time.
    run = app.client.wait(handle.run_id, timeout=20, poll_interval=60)
    worker.join()
    assert run.status == "completed"


def test_failed_runs_raise_run_failed_with_the_run(app: PgFlow, db_url: str) -> None:
    flaky = app.flow("flaky", max_attempts=1)

    @flaky.step
    def boom(run: dict[str, Any]) -> None:
        raise ValueError("card declined")

    handle = flaky.start({})
    drain(db_url, "flaky", run_steps(app, flaky))
    with pytest.raises(RunFailed, match="card declined") as failed:
        handle.wait(timeout=10)
    assert failed.value.run.status == "failed"  # type: ignore[attr-defined]
    assert handle.wait(raise_on_failure=False).status == "failed"


def test_wait_times_out_and_unknown_runs_are_not_found(app: PgFlow) -> None:
    order = define_order_flow(app)
    handle = order.start({"order_id": 1, "items": []})
    with pytest.raises(RunTimeout):
        handle.wait(timeout=0.3)
    with pytest.raises(RunNotFound):
        app.get_run("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound, match="not a run id"):
        app.get_run("nonsense")


def test_start_inside_the_callers_transaction(app: PgFlow, db_url: str) -> None:
    order = define_order_flow(app)
    app.ensure_flow(order)
    with psycopg.connect(db_url.replace("pgflow://", "postgresql://")) as conn:
        handle = app.start_flow(order, {"order_id": 1, "items": ["a"]}, connection=conn)
        conn.rollback()
    with connect(db_url) as check:
        assert check.execute(test_query("count_runs")).fetchone() == (0,)
    assert queue_messages(db_url, "order") == []
    with pytest.raises(RunNotFound):
        app.get_run(handle.run_id)
    with psycopg.connect(db_url) as conn:
        committed = app.start_flow(order, {"order_id": 2, "items": ["a"]}, connection=conn)
    assert app.get_run(committed.run_id).status == "started"


def test_delayed_jobs_wait_in_the_queue(app: PgFlow, db_url: str) -> None:
    @app.task
    def remind(user: str) -> str:
        return f"hello {user}"

    later = app.enqueue_in(remind, {"user": "ada"}, 120)
    at = app.enqueue_at(
        remind, {"user": "bob"}, datetime.now(timezone.utc) + timedelta(seconds=300)
    )
    past = app.enqueue_at(remind, {"user": "cy"}, datetime(2000, 1, 1, tzinfo=timezone.utc))
    messages = queue_messages(db_url, remind.slug)
    delays = {m[1]["run_id"]: m[3] for m in messages}
    assert 118 <= delays[str(later.run_id)] <= 120
    assert 298 <= delays[str(at.run_id)] <= 300
    assert delays[str(past.run_id)] <= 0
    # one check of schedules, and one error type, whichever way a run is started later
    with pytest.raises(FlowInputError, match="naive"):
        app.enqueue_at(remind, {"user": "x"}, datetime(2030, 1, 1))
    with pytest.raises(FlowInputError, match="-5"):
        app.enqueue_in(remind, {"user": "x"}, -5)


def test_code_and_database_mismatch_is_reported_and_recompiled(db_url: str) -> None:
    first = PgFlow(db_url)
    v1 = first.flow("evolving")

    @v1.step
    def one(run: dict[str, Any]) -> int:
        return 1

    first.ensure_flow(v1)
    second = PgFlow(db_url)
    v2 = second.flow("evolving")

    @v2.step
    def renamed(run: dict[str, Any]) -> int:
        return 2

    with pytest.raises(FlowMismatch, match="slug differs 'renamed' vs 'one'"):
        v2.start({})
    second.ensure_flow(v2, recompile=True)
    assert second.client.get_flow_shape("evolving")["steps"][0]["slug"] == "renamed"
    first.close()
    second.close()


def test_flows_admin_from_plain_data(app: PgFlow) -> None:
    result = app.upsert_flow(
        "tenant_sync",
        max_attempts=4,
        steps=[{"slug": "reshape"}, {"slug": "push", "deps": ["reshape"]}],
    )
    assert result == {"status": "compiled", "differences": []}
    assert app.flow_exists("tenant_sync")
    again = app.upsert_flow("tenant_sync", steps=[{"slug": "reshape"}])
    assert again["status"] == "recompiled"
    assert any("Step count differs" in d for d in again["differences"])
    assert [f.flow_slug for f in app.list_flows(database=True)] == ["tenant_sync"]
    app.delete_flow("tenant_sync")
    assert not app.flow_exists("tenant_sync")
    with pytest.raises(FlowNotFound):
        app.delete_flow("tenant_sync")


def test_health_and_core_version(app: PgFlow) -> None:
    health = app.health_check()
    assert health["status"] == "ok"
    assert health["core_version"] == PgFlow.core_version() == "0.8.1"
    assert health["schema_version"] >= 1


def test_an_app_without_a_database_says_how_to_configure_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGFLOW_DATABASE_URL", raising=False)
    app = PgFlow()
    flow = app.flow("nowhere")

    @flow.step
    def s(run: dict[str, Any]) -> None:
        return None

    with pytest.raises(ConfigurationError, match="PGFLOW_DATABASE_URL"):
        flow.start({})


def test_several_apps_share_nothing(db_url: str) -> None:
    a, b = PgFlow(db_url), PgFlow(db_url)
    a.flow("only_in_a")
    assert "only_in_a" in a.flows
    assert "only_in_a" not in b.flows


def test_start_many_starts_every_run_in_one_transaction(app: PgFlow, db_url: str) -> None:
    @app.task
    def double(n: int) -> int:
        return n * 2

    handles = app.start_many(double, [{"n": i} for i in range(25)])
    assert len({h.run_id for h in handles}) == 25
    drain(db_url, "double", run_steps(app, double.flow))
    assert [h.wait(timeout=10).output for h in handles[:3]] == [
        {"double": 0},
        {"double": 2},
        {"double": 4},
    ]
    assert app.start_many(double, []) == []
