"""Stalled-task recovery (pgflow_kombu.recover_stalled_tasks), on our schema and on an upstream one.

A started task is stalled when its worker stopped heartbeating (or its worker row is gone) and it
was claimed longer ago than the timeout; it then goes through fail_task: retried with backoff with
its attempts kept, or failed for good. A visible message alone never counts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reference.driver import WORKER_ID, Db

RUN = uuid.UUID("33333333-3333-4333-8333-333333333333")
TASK = {"run_id": RUN, "step_slug": "work", "task_index": 0}


@pytest.fixture
def db(any_schema_url: str) -> Iterator[Db]:
    database = Db(any_schema_url, "db")
    database.add_worker()
    yield database
    database.close()


def start(
    db: Db, *, max_attempts: int = 3, flow: str = "rec", parallel: bool = False
) -> dict[str, Any]:
    """A run whose task 'work' is started by WORKER_ID; returns the task row."""
    db.call("create_flow", flow_slug=flow, max_attempts=max_attempts, base_delay=2)
    db.call("add_step", flow_slug=flow, step_slug="work")
    if parallel:
        db.call("add_step", flow_slug=flow, step_slug="other", start_delay=60)
    db.call("start_flow", flow_slug=flow, input={"n": 1}, run_id=RUN)
    (task,) = db.call("start_tasks", flow_slug=flow, msg_ids=db.read(flow), worker_id=WORKER_ID)
    return task


def stall(db: Db, *, heartbeat_ago: str = "5 minutes", claimed_ago: str = "5 minutes") -> None:
    db.execute("sqlcore_age_task", {**TASK, "ago": claimed_ago})
    db.execute("sqlcore_heartbeat", {"worker_id": WORKER_ID, "ago": heartbeat_ago})


def recover(db: Db, timeout: str = "30 seconds") -> int:
    (row,) = db.execute("sqlcore_recover", {"timeout": timeout})
    return int(row["recovered"])


def task_row(db: Db) -> dict[str, Any]:
    (row,) = db.execute("sqlcore_task", TASK)
    return row


def test_stale_heartbeat_requeues_the_task_with_its_attempts_kept(db: Db) -> None:
    start(db)
    stall(db)
    assert recover(db) == 1
    row = task_row(db)
    assert (row["status"], row["attempts_count"], row["started_at"]) == ("queued", 1, None)
    assert row["error_message"].startswith(f"[STALLED] worker {WORKER_ID} stopped heartbeating")
    (message,) = db.queue("rec")["live"]
    assert 3.0 <= message["visible_in"] <= 4.0  # backoff floor(2 * 2^1), as fail_task does
    assert recover(db) == 0  # nothing left to recover

    db.make_visible("rec")
    (again,) = db.call("start_tasks", flow_slug="rec", msg_ids=db.read("rec"), worker_id=WORKER_ID)
    assert again["input"] == {"run": {"n": 1}}
    assert task_row(db)["attempts_count"] == 2


def test_out_of_attempts_fails_the_run(db: Db) -> None:
    start(db, max_attempts=1, parallel=True)
    stall(db)
    assert recover(db) == 1
    row = task_row(db)
    assert row["status"] == "failed"
    (run,) = db.execute("sqlcore_run", {"run_id": RUN})
    assert run["status"] == "failed"
    queue = db.queue("rec")
    assert queue["live"] == []
    assert len(queue["archived"]) == 2


def test_fresh_heartbeat_leaves_the_task_alone_even_with_a_visible_message(db: Db) -> None:
    start(db)
    stall(db, heartbeat_ago="1 second")
    db.make_visible("rec")  # a TypeScript worker's running task is visible again after 2 s
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"


def test_recently_claimed_task_is_left_alone(db: Db) -> None:
    start(db)
    stall(db, claimed_ago="1 second")
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"


def test_task_of_a_deleted_worker_is_recovered(db: Db) -> None:
    start(db)
    stall(db)
    db.execute("sqlcore_delete_worker", {"worker_id": WORKER_ID})
    assert task_row(db)["last_worker_id"] is None  # ON DELETE SET NULL
    assert recover(db) == 1
    row = task_row(db)
    assert row["status"] == "queued"
    assert row["error_message"] == (
        "[STALLED] worker (unknown) stopped heartbeating (its worker row is gone)"
    )


def test_flow_filter(db: Db) -> None:
    start(db)
    stall(db)
    (row,) = db.execute("sqlcore_recover_flow", {"timeout": "30 seconds", "flow_slug": "other"})
    assert row["recovered"] == 0
    (row,) = db.execute("sqlcore_recover_flow", {"timeout": "30 seconds", "flow_slug": "rec"})
    assert row["recovered"] == 1


def test_concurrent_recoverers_hand_each_task_over_once(db: Db) -> None:
    start(db)
    stall(db)
    first = Db(db.url, "first")
    second = Db(db.url, "second")
    try:
        with first.conn.transaction():
            assert recover(first) == 1
            # While the first holds its locks, the second skips the run instead of waiting.
            result: list[int] = []
            thread = threading.Thread(target=lambda: result.append(recover(second)))
            thread.start()
            thread.join(timeout=10)
            assert not thread.is_alive()
            assert result == [0]
        assert recover(second) == 0
    finally:
        first.close()
        second.close()
    assert task_row(db)["attempts_count"] == 1


def test_timeout_must_be_positive(db: Db) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="positive interval"):
        recover(db, "0 seconds")


def test_timeout_in_seconds(db: Db) -> None:
    start(db)
    stall(db, heartbeat_ago="90 seconds", claimed_ago="90 seconds")
    assert db.execute("sqlcore_recover_seconds", {"seconds": 120.0}) == [
        {"recover_stalled_tasks": 0}
    ]
    assert db.execute("sqlcore_recover_seconds", {"seconds": 60.0}) == [
        {"recover_stalled_tasks": 1}
    ]
