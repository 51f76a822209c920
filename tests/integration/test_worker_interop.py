"""Our worker and a TypeScript PgflowSqlClient worker serving the same flow queue at once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from tests.e2e_apps.harness import WorkerProcess
from tests.reference import node_project
from tests.support.node import node_connection
from tests.support.sql import test_query

pytestmark = pytest.mark.node

SCRIPT = Path(__file__).resolve().parents[1] / "e2e_apps" / "ts_worker.mjs"


def test_ts_and_python_workers_share_a_queue_and_run_every_task_once(db_url: str) -> None:
    project = node_project()
    script = project / SCRIPT.name
    shutil.copyfile(SCRIPT, script)
    ts_worker_id = str(uuid.uuid4())
    client = Client(db_url, poll_interval=0.5)
    with WorkerProcess(db_url, "--flows", "interop", "-c", "4") as ours:
        ours.wait_ready()  # it also created the flow and its queue
        node = subprocess.Popen(
            ["node", str(script), node_connection(db_url), "interop", ts_worker_id],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert node.stderr is not None
            assert "ts worker ready" in node.stderr.readline()
            # Some tasks outlive the TypeScript worker's 2 s visibility: while it runs them, their
            # messages are visible again, and our worker must leave them alone.
            inputs = [{"n": i, "sleep": 2.5 if i % 10 == 0 else 0.01} for i in range(60)]
            run_ids = [client.start_flow("interop", value) for value in inputs]
            runs = [client.wait(run_id, timeout=120) for run_id in run_ids]
        finally:
            node.send_signal(signal.SIGTERM)
            out, err = node.communicate(timeout=30)
            client.close()
        assert node.returncode == 0, err
        assert ours.stop() == 0
    executed_by_ts = {tuple(t) for t in json.loads(out.strip().splitlines()[-1])["executed"]}

    assert [r.output for r in runs] == [{"dbl": (v["n"] + 1) * 2} for v in inputs]
    workers: dict[str, int] = {}
    with connect(db_url) as conn:
        summary = conn.execute(
            test_query("worker_run_summary"), {"run_ids": [str(r) for r in run_ids]}
        ).fetchall()
    for _run_id, status, tasks in summary:
        assert status == "completed"
        for step, _index, task_status, attempts in tasks:
            assert (task_status, attempts) == ("completed", 1), (step, tasks)
    for run in runs:
        for state in run.step_states:
            for task in state.tasks:
                key = str(task.last_worker_id)
                workers[key] = workers.get(key, 0) + 1
                by_ts = (str(run.run_id), task.step_slug, task.task_index) in executed_by_ts
                assert by_ts == (key == ts_worker_id)
    # Both did real work: every task ran exactly once, on one of them.
    assert workers.get(ts_worker_id, 0) > 0
    assert sum(n for w, n in workers.items() if w != ts_worker_id) > 0
    assert sum(workers.values()) == 2 * len(inputs)
