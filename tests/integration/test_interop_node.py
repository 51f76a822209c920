"""Interop with the reference TypeScript side, both ways.

1. A run started from Python on OUR schema is worked to completion by the reference
   ``PgflowSqlClient`` (@pgflow/core 0.8.1 on Node, ``postgres`` package): read, claim, complete,
   fail and retry.
2. Our Python-side calls and our pgflow_kombu objects (stalled recovery, run-finished NOTIFY) work
   on an UPSTREAM-installed pgflow schema.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pgflow_kombu.db.connect import connect
from tests.reference import node_project
from tests.reference.driver import WORKER_ID, Db
from tests.support.node import run_node_script
from tests.support.sql import test_query

pytestmark = pytest.mark.node

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "interop_sql_client.mjs"
RUN = uuid.UUID("55555555-5555-4555-8555-555555555555")
NUMBERS = [3, 1, 4, 1, 5]


def define_interop_flow(db: Db) -> None:
    db.call("create_flow", flow_slug="interop", max_attempts=3, base_delay=0)
    db.call("add_step", flow_slug="interop", step_slug="fetch")
    db.call(
        "add_step", flow_slug="interop", step_slug="double", deps_slugs=["fetch"], step_type="map"
    )
    db.call("add_step", flow_slug="interop", step_slug="total", deps_slugs=["double", "fetch"])


def node_connection(url: str) -> str:
    """Connection options for the ``postgres`` package (a host starting with / is a socket dir)."""
    with connect(url) as conn:
        info = conn.info
        options: dict[str, Any] = {
            "host": info.host,
            "port": info.port,
            "database": info.dbname,
            "username": info.user,
        }
        if info.password:
            options["password"] = info.password
    return json.dumps(options)


def test_pgflow_sql_client_works_a_run_on_our_schema(db_url: str) -> None:
    db = Db(db_url, "ours")
    try:
        define_interop_flow(db)
        db.call("start_flow", flow_slug="interop", input={"numbers": NUMBERS}, run_id=RUN)
        worker = uuid.uuid4()
        out = run_node_script(
            node_project(), SCRIPT, node_connection(db_url), "interop", str(RUN), str(worker)
        )
        summary = json.loads(out.strip().splitlines()[-1])

        assert summary["status"] == "completed"
        assert summary["output"] == {"total": 2 * sum(NUMBERS) + len(NUMBERS)}
        inputs = {(s["step_slug"], s["task_index"]): s["input"] for s in summary["seen"]}
        assert inputs[("fetch", 0)] == {"run": {"numbers": NUMBERS}}
        assert [inputs[("double", i)] for i in range(len(NUMBERS))] == NUMBERS
        assert inputs[("total", 0)] == {
            "run": {"numbers": NUMBERS},
            "fetch": NUMBERS,
            "double": [2 * n for n in NUMBERS],
        }
        tasks = {(t["step_slug"], t["task_index"]): t for t in db.execute("sqlcore_step_tasks")}
        total = tasks[("total", 0)]
        # Completed on its second attempt; the first attempt's error is not kept.
        assert (total["status"], total["attempts_count"], total["error_message"]) == (
            "completed",
            2,
            None,
        )
        assert all(t["last_worker_id"] == worker for t in tasks.values())
        queue = db.queue("interop")
        assert queue["live"] == []
        assert len(queue["archived"]) == 1 + len(NUMBERS) + 1
    finally:
        db.close()


def test_python_side_calls_and_our_objects_work_on_an_upstream_schema(upstream_db_url: str) -> None:
    db = Db(upstream_db_url, "upstream")
    listener = connect(upstream_db_url)
    try:
        listener.execute(test_query("sqlcore_listen"))
        db.add_worker()
        define_interop_flow(db)
        db.call("start_flow", flow_slug="interop", input={"numbers": [7, 8]}, run_id=RUN)

        # The worker that claims 'fetch' dies; recovery hands the task back with its attempt kept.
        (fetch,) = db.call(
            "start_tasks", flow_slug="interop", msg_ids=db.read("interop"), worker_id=WORKER_ID
        )
        db.execute("sqlcore_age_task", {**_key(fetch), "ago": "2 minutes"})
        db.execute("sqlcore_heartbeat", {"worker_id": WORKER_ID, "ago": "2 minutes"})
        (row,) = db.execute("sqlcore_recover", {"timeout": "30 seconds"})
        assert row["recovered"] == 1

        db.execute("sqlcore_heartbeat", {"worker_id": WORKER_ID, "ago": "0 seconds"})
        handlers = {
            "fetch": lambda task: task["input"]["run"]["numbers"],
            "double": lambda task: task["input"] * 2,
            "total": lambda task: sum(task["input"]["double"]),
        }
        for _ in range(10):
            msg_ids = db.read("interop")
            if not msg_ids:
                break
            for task in db.call(
                "start_tasks", flow_slug="interop", msg_ids=msg_ids, worker_id=WORKER_ID
            ):
                db.call("complete_task", **_key(task), output=handlers[task["step_slug"]](task))

        (run,) = db.execute("sqlcore_run", {"run_id": RUN})
        assert (run["status"], run["output"]) == ("completed", {"total": 30})
        (fetch_row,) = db.execute("sqlcore_task", _key(fetch))
        assert fetch_row["attempts_count"] == 2
        assert fetch_row["error_message"].startswith("[STALLED]")
        notes = [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]
        assert notes == [f"{RUN}:completed"]
    finally:
        listener.close()
        db.close()


def _key(task: dict[str, Any]) -> dict[str, Any]:
    return {k: task[k] for k in ("run_id", "step_slug", "task_index")}
