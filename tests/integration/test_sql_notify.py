"""Run-finished notifications: NOTIFY pgflow_kombu_run '<run_id>:<status>' when a run completes or
fails, on our schema and on an upstream pgflow schema (the trigger lives in pgflow_kombu)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgflow_kombu.db.connect import connect
from tests.reference.driver import WORKER_ID, Db
from tests.support.sql import test_query

RUN = uuid.UUID("44444444-4444-4444-8444-444444444444")
BIG = {"blob": "x" * 10_000}  # an output larger than a NOTIFY payload may be


@pytest.fixture
def db(any_schema_url: str) -> Iterator[Db]:
    database = Db(any_schema_url, "db")
    database.add_worker()
    database.call("create_flow", flow_slug="note", max_attempts=1)
    database.call("add_step", flow_slug="note", step_slug="only")
    yield database
    database.close()


@pytest.fixture
def listener(any_schema_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    conn = connect(any_schema_url)
    conn.execute(test_query("sqlcore_listen"))
    yield conn
    conn.close()


def received(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in conn.notifies(timeout=0.5, stop_after=5)]


def run_task(db: Db) -> dict[str, object]:
    db.call("start_flow", flow_slug="note", input=BIG, run_id=RUN)
    (task,) = db.call("start_tasks", flow_slug="note", msg_ids=db.read("note"), worker_id=WORKER_ID)
    return task


def test_completed_run_notifies_its_id_and_status(db: Db, listener: psycopg.Connection) -> None:
    task = run_task(db)
    assert received(listener) == []  # starting a run says nothing
    db.call(
        "complete_task", run_id=RUN, step_slug="only", task_index=task["task_index"], output=BIG
    )
    assert received(listener) == [("pgflow_kombu_run", f"{RUN}:completed")]


def test_failed_run_notifies(db: Db, listener: psycopg.Connection) -> None:
    task = run_task(db)
    db.call(
        "fail_task", run_id=RUN, step_slug="only", task_index=task["task_index"], error_message="x"
    )
    assert received(listener) == [("pgflow_kombu_run", f"{RUN}:failed")]


def test_run_completed_inside_start_flow_notifies(db: Db, listener: psycopg.Connection) -> None:
    db.call("create_flow", flow_slug="empty")
    db.call("start_flow", flow_slug="empty", input={}, run_id=RUN)
    assert received(listener) == [("pgflow_kombu_run", f"{RUN}:completed")]
