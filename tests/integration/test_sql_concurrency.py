"""Concurrent workers reporting tasks of one run: the run row lock serialises them, nothing is lost
or counted twice, and no deadlock occurs (map fan-in, diamond fan-in, failure racing completions)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.reference.driver import WORKER_ID, Db

THREADS = 4


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    database = Db(db_url, "ours")
    database.add_worker()
    yield database
    database.close()


def in_parallel(url: str, jobs: list[Callable[[Db], Any]]) -> list[Any]:
    """Run jobs on THREADS connections at once; re-raise the first error."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def worker(offset: int) -> None:
        conn = Db(url, f"worker-{offset}")
        try:
            barrier.wait()
            for i in range(offset, len(jobs), THREADS):
                results[i] = jobs[i](conn)
        except BaseException as exc:  # collected, re-raised below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def complete(task: dict[str, Any], output: Any) -> Callable[[Db], Any]:
    def job(conn: Db) -> Any:
        return conn.call(
            "complete_task",
            run_id=task["run_id"],
            step_slug=task["step_slug"],
            task_index=task["task_index"],
            output=output,
        )

    return job


def test_map_tasks_completed_concurrently(db: Db) -> None:
    db.call("create_flow", flow_slug="fan")
    db.call("add_step", flow_slug="fan", step_slug="each", step_type="map")
    db.call("add_step", flow_slug="fan", step_slug="square", deps_slugs=["each"], step_type="map")
    db.call("add_step", flow_slug="fan", step_slug="total", deps_slugs=["square"])
    (run,) = db.call("start_flow", flow_slug="fan", input=list(range(40)))

    for step in ("each", "square"):
        tasks = db.call("start_tasks", flow_slug="fan", msg_ids=db.read("fan"), worker_id=WORKER_ID)
        assert len(tasks) == 40
        outputs = [t["input"] + 1 if step == "each" else t["input"] ** 2 for t in tasks]
        in_parallel(db.url, [complete(t, out) for t, out in zip(tasks, outputs, strict=True)])

    (total,) = db.call("start_tasks", flow_slug="fan", msg_ids=db.read("fan"), worker_id=WORKER_ID)
    assert total["input"]["square"] == [(i + 1) ** 2 for i in range(40)]
    db.call("complete_task", run_id=run["run_id"], step_slug="total", task_index=0, output=1)
    (row,) = db.execute("sqlcore_run", {"run_id": run["run_id"]})
    assert (row["status"], row["remaining_steps"], row["output"]) == ("completed", 0, {"total": 1})


def test_diamond_parents_completed_concurrently(db: Db) -> None:
    parents = [f"p{i}" for i in range(8)]
    db.call("create_flow", flow_slug="join")
    for parent in parents:
        db.call("add_step", flow_slug="join", step_slug=parent)
    db.call("add_step", flow_slug="join", step_slug="child", deps_slugs=parents)
    for _ in range(5):
        (run,) = db.call("start_flow", flow_slug="join", input={})
        tasks = db.call(
            "start_tasks", flow_slug="join", msg_ids=db.read("join"), worker_id=WORKER_ID
        )
        in_parallel(db.url, [complete(t, t["step_slug"]) for t in tasks])
        (child,) = db.call(
            "start_tasks", flow_slug="join", msg_ids=db.read("join"), worker_id=WORKER_ID
        )
        assert child["input"] == {"run": {}, **{p: p for p in parents}}
        db.call("complete_task", run_id=run["run_id"], step_slug="child", task_index=0, output=0)
        (row,) = db.execute("sqlcore_run", {"run_id": run["run_id"]})
        assert row["status"] == "completed"


def test_failure_racing_completions(db: Db) -> None:
    db.call("create_flow", flow_slug="race", max_attempts=1)
    db.call("add_step", flow_slug="race", step_slug="each", step_type="map")
    (run,) = db.call("start_flow", flow_slug="race", input=list(range(20)))
    tasks = db.call("start_tasks", flow_slug="race", msg_ids=db.read("race"), worker_id=WORKER_ID)

    def fail(task: dict[str, Any]) -> Callable[[Db], Any]:
        def job(conn: Db) -> Any:
            return conn.call(
                "fail_task",
                run_id=task["run_id"],
                step_slug="each",
                task_index=task["task_index"],
                error_message="boom",
            )

        return job

    jobs = [fail(t) if t["task_index"] == 7 else complete(t, t["task_index"]) for t in tasks]
    in_parallel(db.url, jobs)
    (row,) = db.execute("sqlcore_run", {"run_id": run["run_id"]})
    assert row["status"] == "failed"
    states = db.execute("sqlcore_step_tasks")
    assert {t["status"] for t in states} <= {"completed", "failed", "started"}
    assert db.queue("race")["live"] == []
