"""Run-finished notifications: NOTIFY pgflow_kombu_run '<run_id>:<status>' when a run completes or
fails, on our schema and on an upstream pgflow schema (the trigger lives in pgflow_kombu)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query
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


def test_a_batch_finished_in_one_statement_notifies_each_run_step_and_watcher(
    db_url: str,
) -> None:
    """The set-based functions change a whole batch in one statement: the statement-level
    triggers still send one notification per run and per step status change, and watcher events
    for the watched run only."""
    database = Db(db_url, "db")
    database.add_worker()
    database.call("create_flow", flow_slug="batch")
    database.call("add_step", flow_slug="batch", step_slug="only")
    database.close()
    listener = connect(db_url)
    listener.execute(test_query("notify_listen_all"))
    with connect(db_url) as conn:
        conn.execute(query("dashboard.register_listener"), {"listener_id": uuid.uuid4(), "ttl": 60})
        started = conn.execute(
            test_query("setb_bench_start_flows"), {"flow_slug": "batch", "inputs": [Jsonb({})] * 5}
        )
        run_ids = [str(r[0]) for r in started]
        watched = run_ids[2]
        watch = {"run_id": watched, "watcher_id": uuid.uuid4(), "ttl": 60}
        conn.execute(query("runs.watch_run"), watch)
        read = conn.execute(test_query("setb_bench_read"), {"flow_slug": "batch", "n": 5})
        claim = {"flow_slug": "batch", "msg_ids": [r[0] for r in read], "worker_id": WORKER_ID}
        tasks = conn.execute(test_query("setb_bench_claim_tasks"), claim).fetchall()
        reports = [
            {"run_id": str(r), "step_slug": s, "task_index": i, "attempt": a,
             "worker_id": str(WORKER_ID), "output": {"ok": True}}
            for r, s, i, a in tasks
        ]  # fmt: skip
        outcomes = conn.execute(test_query("setb_bench_report_set"), {"reports": Jsonb(reports)})
        assert [o[0] for o in outcomes] == ["completed"] * 5
    notes = [(n.channel, n.payload) for n in listener.notifies(timeout=0.5, stop_after=21)]
    listener.close()
    assert sorted(p for c, p in notes if c == "pgflow_kombu_run") == sorted(
        f"{r}:completed" for r in run_ids
    )
    assert sorted(p for c, p in notes if c == "pgflow_kombu_step") == sorted(
        f"{r}:only:{s}" for r in run_ids for s in ("started", "completed")
    )
    assert [p for c, p in notes if c == "pgflow_kombu_events"] == [watched]
