"""Events go through realtime.send when it exists and nothing fails when it does not; the check is
made at run time, so a realtime.send created later (or dropped) takes effect at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.reference import install_realtime
from tests.reference.driver import WORKER_ID, Db


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    database = Db(db_url, "ours")
    database.add_worker()
    database.call("create_flow", flow_slug="rt")
    database.call("add_step", flow_slug="rt", step_slug="a")
    database.call("add_step", flow_slug="rt", step_slug="b", deps_slugs=["a"])
    yield database
    database.close()


def run_to_completion(db: Db) -> uuid.UUID:
    (run,) = db.call("start_flow", flow_slug="rt", input={"k": 1})
    for _ in range(2):
        (task,) = db.call("start_tasks", flow_slug="rt", msg_ids=db.read("rt"), worker_id=WORKER_ID)
        db.call(
            "complete_task",
            run_id=task["run_id"],
            step_slug=task["step_slug"],
            task_index=task["task_index"],
            output={"from": task["step_slug"]},
        )
    (row,) = db.execute("sqlcore_run", {"run_id": run["run_id"]})
    assert row["status"] == "completed"
    run_id: uuid.UUID = run["run_id"]
    return run_id


def test_runs_work_without_realtime_and_events_start_once_it_exists(db: Db) -> None:
    run_to_completion(db)  # no realtime schema at all

    install_realtime(db.url, "log")  # same session keeps working, now with events
    run_id = run_to_completion(db)
    events = db.events()
    assert [e["event"] for e in events] == [
        "run:started",
        "step:a:started",
        "step:a:completed",
        "step:b:started",
        "step:b:completed",
        "run:completed",
    ]
    assert {e["topic"] for e in events} == {f"pgflow:run:{run_id}"}
    assert events[-1]["payload"] == {
        "event_type": "run:completed",
        "run_id": str(run_id),
        "flow_slug": "rt",
        "status": "completed",
        "output": {"b": {"from": "b"}},
        "completed_at": "<ts>",
    }


def test_a_realtime_schema_without_send_is_ignored(db: Db) -> None:
    db.execute("sqlcore_realtime_schema_only")
    run_to_completion(db)
