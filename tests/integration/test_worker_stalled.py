"""Stalled-task recovery by running workers: never a task its worker may still be running.

A pgflow 0.8.1 TypeScript edge worker heartbeats between batches only, so while a long task runs
its heartbeat goes stale; our worker must leave that task alone. A worker of ours heartbeats from a
thread, so once its heartbeat is stale it is dead and its tasks are recovered (once).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from tests.e2e_apps.basic import interop
from tests.e2e_apps.harness import ROOT, WorkerProcess
from tests.reference import node_project
from tests.support.node import node_connection
from tests.support.sql import test_query

STALLED_AFTER = 2.0
FAST = ["--heartbeat-interval", "0.5", "--stalled-after", str(STALLED_AFTER)]
TS_WORKER = ROOT / "tests" / "e2e_apps" / "ts_worker.mjs"


def probe(url: str, run_id: str, step_slug: str) -> dict[str, Any]:
    with connect(url) as conn:
        cursor = conn.execute(
            test_query("worker_task_probe"), {"run_id": run_id, "step_slug": step_slug}
        )
        columns = [c.name for c in cursor.description or ()]
        row = cursor.fetchone()
    assert row is not None, (run_id, step_slug)
    return dict(zip(columns, row, strict=True))


def wait_task(url: str, run_id: str, step_slug: str, done: Any, timeout: float = 60.0) -> Any:
    """Poll the task until ``done(state)``; returns that state."""
    deadline = time.monotonic() + timeout
    while True:
        state = probe(url, run_id, step_slug)
        if done(state):
            return state
        assert time.monotonic() < deadline, f"task {step_slug} of {run_id}: {state}"
        time.sleep(0.05)


def db_now(url: str) -> datetime:
    with connect(url) as conn:
        row = conn.execute(test_query("worker_db_now")).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def worker_ids(url: str, pid: int) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute(test_query("worker_ids_of_pid"), {"pid": pid}).fetchall()
    return [str(r[0]) for r in rows]


def launch_edge_worker(kind: str, url: str, worker_id: str) -> subprocess.Popen[str]:
    """A worker that runs the 0.8.1 edge worker's loop: our Python rendering of it (its SQL), or
    tests/e2e_apps/ts_worker.mjs on the reference PgflowSqlClient under Node."""
    if kind == "python":
        command = [sys.executable, "-m", "tests.support.edge_worker", url, "interop", worker_id]
        cwd = ROOT
    else:
        cwd = node_project()
        shutil.copyfile(TS_WORKER, cwd / TS_WORKER.name)
        command = ["node", TS_WORKER.name, node_connection(url), "interop", worker_id]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("kind", ["python", pytest.param("node", marks=pytest.mark.node)])
def test_a_silent_edge_worker_keeps_its_long_task_beside_our_worker(
    db_url: str, tmp_path: Path, kind: str
) -> None:
    client = Client(db_url, poll_interval=0.5)
    client.compile_flow(interop.shape())
    edge_id = str(uuid.uuid4())
    release = tmp_path / "release"
    edge = launch_edge_worker(kind, db_url, edge_id)
    try:
        assert edge.stderr is not None
        assert "worker ready" in edge.stderr.readline()
        run_id = str(client.start_flow("interop", {"n": 1, "until": str(release)}))
        wait_task(db_url, run_id, "inc", lambda s: s["status"] == "started")
        with WorkerProcess(db_url, "--flows", "interop", *FAST) as ours:
            ours.wait_ready()
            # The edge worker last heartbeated before it read the task; while it runs, our
            # worker's recovery runs every second with that heartbeat stale for longer and longer.
            stale_from = db_now(db_url)
            while db_now(db_url) < stale_from + timedelta(seconds=3 * STALLED_AFTER):
                state = probe(db_url, run_id, "inc")
                assert (state["status"], state["attempts_count"]) == ("started", 1), state
                assert str(state["last_worker_id"]) == edge_id
                time.sleep(0.2)
            release.touch()
            run = client.wait(run_id, timeout=60)
            assert ours.stop() == 0
            log = ours.log
    finally:
        edge.send_signal(signal.SIGTERM)
        out, err = edge.communicate(timeout=30)
        client.close()
    assert edge.returncode == 0, err

    assert (run.status, run.output) == ("completed", {"dbl": 4})
    inc = probe(db_url, run_id, "inc")
    assert (inc["status"], inc["attempts_count"], inc["error_message"]) == ("completed", 1, None)
    assert str(inc["last_worker_id"]) == edge_id
    executed = json.loads(out.strip().splitlines()[-1])["executed"]
    assert executed.count([run_id, "inc", 0]) == 1
    assert "requeued" not in log


def test_a_killed_worker_task_is_recovered_once_after_its_heartbeat_went_stale(
    db_url: str,
) -> None:
    args = ("--flows", "sleeper", "-c", "2", *FAST)
    with WorkerProcess(db_url, *args) as first, WorkerProcess(db_url, *args) as second:
        first.wait_ready()
        second.wait_ready()
        client = Client(db_url)
        try:
            run_id = str(client.start_flow("sleeper", {"seconds": 3.0}))
        finally:
            client.close()
        started = wait_task(db_url, run_id, "sleeper", lambda s: s["status"] == "started")
        holder, survivor = (
            (first, second)
            if str(started["last_worker_id"]) in worker_ids(db_url, first.pid)
            else (second, first)
        )
        holder_ids = worker_ids(db_url, holder.pid)
        assert str(started["last_worker_id"]) in holder_ids
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with connect(db_url) as conn:
            row = conn.execute(
                test_query("worker_last_heartbeat"), {"worker_ids": holder_ids}
            ).fetchone()
        assert row is not None
        last_heartbeat: datetime = row[0]

        # The first moment the task is no longer the dead worker's attempt 1.
        recovered = wait_task(
            db_url,
            run_id,
            "sleeper",
            lambda s: (
                (s["status"], s["attempts_count"], str(s["last_worker_id"]))
                != ("started", 1, str(started["last_worker_id"]))
            ),
        )
        final = wait_task(
            db_url, run_id, "sleeper", lambda s: s["status"] in ("completed", "failed")
        )
        assert survivor.stop() == 0
        survivor_log = survivor.log

    # Not before the heartbeat went stale; about stalled_after later (generous for a busy host).
    assert recovered["read_at"] >= last_heartbeat + timedelta(seconds=STALLED_AFTER)
    assert recovered["read_at"] <= last_heartbeat + timedelta(seconds=STALLED_AFTER + 20)
    assert (final["status"], final["attempts_count"]) == ("completed", 2)
    assert str(final["last_worker_id"]) in worker_ids(db_url, survivor.pid)
    assert survivor_log.count("requeued 1 stalled task(s)") == 1, survivor_log
