"""Stalled-task recovery (pgflow_kombu.recover_stalled_tasks), on our schema and on an upstream one.

A started task is stalled when its worker can no longer be running it. A worker of ours (listed in
pgflow_kombu.known_workers by the registration query) heartbeats while it works, so a stale
heartbeat is enough. Any other worker (a 0.8.1 TypeScript worker heartbeats between batches only)
must also be past its step's timeout plus a margin since the task started; so must a task whose
worker row is gone. A stalled task goes through fail_task: retried with backoff with its attempts
kept, or failed for good. A visible message alone never counts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgflow_kombu.db.queries import query
from tests.reference.driver import WORKER_ID, Db

RUN = uuid.UUID("33333333-3333-4333-8333-333333333333")
TASK = {"run_id": RUN, "step_slug": "work", "task_index": 0}
STEP_TIMEOUT = 10  # seconds; with the default 30 s margin a foreign task is stalled after 40 s


@pytest.fixture
def db(any_schema_url: str) -> Iterator[Db]:
    """WORKER_ID is a foreign worker (not registered by ours) until :func:`make_ours`."""
    database = Db(any_schema_url, "db")
    database.add_worker()
    yield database
    database.close()


def make_ours(db: Db, worker_id: uuid.UUID = WORKER_ID) -> None:
    """Register ``worker_id`` as our worker does (the same query)."""
    db.conn.execute(
        query("worker.register"),
        {"worker_ids": [worker_id], "queue_names": ["any"], "function_name": "custom-name"},
    )


def start(
    db: Db,
    *,
    max_attempts: int = 3,
    flow: str = "rec",
    parallel: bool = False,
    flow_timeout: int = 60,
    step_timeout: int | None = STEP_TIMEOUT,
    worker_id: uuid.UUID = WORKER_ID,
) -> dict[str, Any]:
    """A run whose task 'work' is started by ``worker_id``; returns the task row."""
    db.call(
        "create_flow", flow_slug=flow, max_attempts=max_attempts, base_delay=2, timeout=flow_timeout
    )
    if step_timeout is None:
        db.call("add_step", flow_slug=flow, step_slug="work")
    else:
        db.call("add_step", flow_slug=flow, step_slug="work", timeout=step_timeout)
    if parallel:
        db.call("add_step", flow_slug=flow, step_slug="other", start_delay=60)
    db.call("start_flow", flow_slug=flow, input={"n": 1}, run_id=RUN)
    (task,) = db.call("start_tasks", flow_slug=flow, msg_ids=db.read(flow), worker_id=worker_id)
    return task


def stall(
    db: Db,
    *,
    heartbeat_ago: str = "5 minutes",
    claimed_ago: str = "5 minutes",
    worker_id: uuid.UUID = WORKER_ID,
) -> None:
    db.execute("sqlcore_age_task", {**TASK, "ago": claimed_ago})
    db.execute("sqlcore_heartbeat", {"worker_id": worker_id, "ago": heartbeat_ago})


def recover(db: Db, timeout: str = "30 seconds") -> int:
    (row,) = db.execute("sqlcore_recover", {"timeout": timeout})
    return int(row["recovered"])


def task_row(db: Db) -> dict[str, Any]:
    (row,) = db.execute("sqlcore_task", TASK)
    return row


# --- our workers: judged by their heartbeat ------------------------------------------------------


def test_stale_heartbeat_of_our_worker_requeues_the_task_with_its_attempts_kept(db: Db) -> None:
    make_ours(db)
    start(db)
    stall(db, claimed_ago="35 seconds")  # inside the step timeout + margin: only ours go now
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
    make_ours(db)
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


@pytest.mark.parametrize("ours", [True, False], ids=["ours", "foreign"])
def test_fresh_heartbeat_leaves_the_task_alone_even_with_a_visible_message(
    db: Db, ours: bool
) -> None:
    if ours:
        make_ours(db)
    start(db)
    stall(db, heartbeat_ago="1 second")
    db.make_visible("rec")  # a TypeScript worker's running task is visible again after 2 s
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"


def test_recently_claimed_task_of_our_worker_is_left_alone(db: Db) -> None:
    make_ours(db)
    start(db)
    stall(db, claimed_ago="1 second")
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"


# --- any other worker: silent AND past its step's timeout + margin --------------------------------


def test_silent_foreign_worker_inside_timeout_and_margin_keeps_its_task(db: Db) -> None:
    start(db)
    stall(db, claimed_ago="35 seconds")  # silent for 5 minutes, but 35 s < 10 s + 30 s
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"
    # The same task, the same ages, held by a worker of ours: recovered.
    make_ours(db)
    stall(db, claimed_ago="0 seconds")
    assert recover(db) == 1


def test_silent_foreign_worker_past_timeout_and_margin_loses_its_task(db: Db) -> None:
    start(db)
    stall(db, claimed_ago="45 seconds")
    assert recover(db) == 1
    row = task_row(db)
    assert (row["status"], row["attempts_count"]) == ("queued", 1)
    assert row["error_message"].startswith(
        f"[STALLED] worker {WORKER_ID} is silent (last heartbeat"
    )
    assert row["error_message"].endswith(
        f"outlived its timeout of {STEP_TIMEOUT} s by more than 30 s"
    )


def test_foreign_worker_heartbeating_keeps_its_task_past_the_timeout(db: Db) -> None:
    start(db)
    stall(db, heartbeat_ago="2 seconds", claimed_ago="10 minutes")
    assert recover(db) == 0
    assert task_row(db)["status"] == "started"


def test_the_step_timeout_is_used_else_the_flow_timeout(db: Db) -> None:
    start(db, flow_timeout=100, step_timeout=None)
    stall(db, claimed_ago="45 seconds")
    assert recover(db) == 0  # 45 s < 100 s + 30 s
    stall(db, claimed_ago="90 seconds")  # now 135 s
    assert recover(db) == 1
    assert "outlived its timeout of 100 s" in task_row(db)["error_message"]


def test_step_timeout_wins_over_a_longer_flow_timeout(db: Db) -> None:
    start(db, flow_timeout=100, step_timeout=STEP_TIMEOUT)
    stall(db, claimed_ago="45 seconds")
    assert recover(db) == 1


def test_margin_is_a_parameter(db: Db) -> None:
    start(db)
    stall(db, claimed_ago="15 seconds")
    (row,) = db.execute("sqlcore_recover_margin", {"timeout": "30 seconds", "margin": "10 seconds"})
    assert row["recovered"] == 0  # 15 s < 10 s + 10 s
    (row,) = db.execute("sqlcore_recover_margin", {"timeout": "30 seconds", "margin": "0 seconds"})
    assert row["recovered"] == 1


def test_a_function_name_does_not_make_a_worker_ours(db: Db) -> None:
    impostor = uuid.uuid4()
    db.execute(
        "sqlcore_add_named_worker",
        {"worker_id": impostor, "queue": "any", "function_name": "pgflow-kombu:host:1"},
    )
    start(db, worker_id=impostor)
    stall(db, claimed_ago="35 seconds", worker_id=impostor)
    assert recover(db) == 0


# --- a task whose worker row is gone --------------------------------------------------------------


@pytest.mark.parametrize("ours", [True, False], ids=["ours", "foreign"])
def test_task_of_a_deleted_worker_follows_the_timeout_rule(db: Db, ours: bool) -> None:
    if ours:
        make_ours(db)
    start(db)
    stall(db, claimed_ago="35 seconds")
    db.execute("sqlcore_delete_worker", {"worker_id": WORKER_ID})
    assert task_row(db)["last_worker_id"] is None  # ON DELETE SET NULL: whose it was is lost
    assert recover(db) == 0
    assert db.execute("sqlcore_known_workers") == []  # the id of a deleted row is pruned
    stall(db, claimed_ago="10 seconds")  # now 45 s
    assert recover(db) == 1
    row = task_row(db)
    assert row["status"] == "queued"
    assert row["error_message"].startswith(
        "[STALLED] worker (unknown) is gone (its worker row was deleted) and the task, started at"
    )


# --- the function itself ----------------------------------------------------------------------------


def test_flow_filter(db: Db) -> None:
    make_ours(db)
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


def test_margin_must_not_be_negative(db: Db) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="foreign_margin"):
        db.execute("sqlcore_recover_margin", {"timeout": "30 seconds", "margin": "-1 seconds"})


def test_timeout_in_seconds(db: Db) -> None:
    make_ours(db)
    start(db)
    stall(db, heartbeat_ago="90 seconds", claimed_ago="90 seconds")
    assert db.execute("sqlcore_recover_seconds", {"seconds": 120.0}) == [
        {"recover_stalled_tasks": 0}
    ]
    assert db.execute("sqlcore_recover_seconds", {"seconds": 60.0}) == [
        {"recover_stalled_tasks": 1}
    ]
