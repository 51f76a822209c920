"""Failures: a worker killed mid-task, PostgreSQL restarted under load."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.db import embedded, migrations
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import PgFlowError
from tests.e2e_apps.harness import WorkerProcess
from tests.support.sql import test_query

FAST = ["--heartbeat-interval", "0.5", "--stalled-after", "2"]


def start_runs(url: str, flow: str, inputs: list[Any]) -> list[str]:
    client = Client(url)
    try:
        return [str(client.start_flow(flow, value)) for value in inputs]
    finally:
        client.close()


def summary(url: str, run_ids: list[str]) -> dict[str, tuple[str, list[list[Any]]]]:
    with connect(url) as conn:
        rows = conn.execute(test_query("worker_run_summary"), {"run_ids": run_ids}).fetchall()
    return {str(run_id): (status, tasks) for run_id, status, tasks in rows}


def wait_finished(url: str, run_ids: list[str], timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = summary(url, run_ids)
        except PgFlowError:
            time.sleep(0.2)  # the server may be restarting
            continue
        if len(last) == len(run_ids) and all(s != "started" for s, _ in last.values()):
            return last
        time.sleep(0.2)
    pending = {k: v for k, v in last.items() if v[0] == "started"}
    raise AssertionError(f"runs still unfinished after {timeout} s: {pending}")


def worker_ids(url: str, pid: int) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute(test_query("worker_ids_of_pid"), {"pid": pid}).fetchall()
    return [str(r[0]) for r in rows]


def test_a_worker_killed_mid_task_loses_no_run(db_url: str) -> None:
    with WorkerProcess(db_url, "-c", "4", *FAST) as doomed:
        doomed.wait_ready()
        run_ids = start_runs(db_url, "sleeper", [{"seconds": 1.0, "tag": i} for i in range(16)])
        ids = worker_ids(db_url, doomed.pid)
        deadline = time.monotonic() + 30
        with connect(db_url) as conn:
            while not conn.execute(test_query("worker_started_by"), {"worker_ids": ids}).fetchall():
                assert time.monotonic() < deadline, doomed.log
                time.sleep(0.02)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        with connect(db_url) as conn:
            lost = {
                (str(r[0]), r[1], r[2])
                for r in conn.execute(test_query("worker_started_by"), {"worker_ids": ids})
            }
        assert lost  # it died holding tasks (claimed ones count, running or not)

        with WorkerProcess(db_url, "-c", "4", *FAST) as rescuer:
            rescuer.wait_ready()
            final = wait_finished(db_url, run_ids)
            rescuer.stop()
    assert "requeued" in rescuer.log
    for run_id, (status, tasks) in final.items():
        assert status == "completed", (run_id, tasks)
        [(step, index, task_status, attempts)] = tasks
        assert task_status == "completed"
        # The attempt lost with the dead worker counts, as pgflow counts attempts.
        assert attempts == (2 if (run_id, step, index) in lost else 1), (run_id, tasks)


@pytest.fixture
def throwaway_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A PostgreSQL server of its own (embedded, in a temporary directory) with our schema."""
    directory = tmp_path / "pgdata"
    url = embedded.database_url(directory, dbname="restart")
    migrations.upgrade(url)
    try:
        yield directory, url
    finally:
        embedded.stop(directory)


@pytest.mark.slow
def test_workers_reconnect_after_a_postgres_restart(throwaway_server: tuple[Path, str]) -> None:
    directory, url = throwaway_server
    with (
        WorkerProcess(url, "-c", "4", *FAST) as one,
        WorkerProcess(url, "-c", "4", "--pool", "processes", *FAST) as two,
    ):
        one.wait_ready()
        two.wait_ready()
        sleepers = start_runs(url, "sleeper", [{"seconds": 0.5, "tag": i} for i in range(24)])
        diamonds = start_runs(url, "diamond", list(range(20)))
        time.sleep(0.5)  # both are busy now
        assert embedded.stop(directory)
        time.sleep(1.0)
        embedded.server_url(directory, announce=False)
        more = start_runs(url, "diamond", list(range(20, 30)))
        try:
            final = wait_finished(url, sleepers + diamonds + more, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- one:\n{one.log}\n--- two:\n{two.log}") from None
        codes = (one.stop(), two.stop())
        assert set(codes) <= {0, 75}, f"{codes}\n--- one:\n{one.log}\n--- two:\n{two.log}"
    assert all(status == "completed" for status, _ in final.values()), final
    assert "database unreachable" in one.log + two.log
    with connect(url) as conn:
        outputs = [
            conn.execute(test_query("worker_run_status"), {"run_id": r}).fetchone() for r in more
        ]
    assert outputs == [("completed",)] * 10
