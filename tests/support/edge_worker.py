"""A pgflow 0.8.1 TypeScript edge worker's main loop, in Python, with the same SQL.

It follows upstream's ``Worker.start`` / ``BatchProcessor.processBatch`` at 0.8.1: register a
``pgflow.workers`` row; then, per iteration, heartbeat (at most every ``heartbeat_interval``
seconds), ``pgmq.read_with_poll`` with a 2 s visibility, ``pgflow.start_tasks``, run the batch's
handlers concurrently and wait for all of them (each then calls ``complete_task`` or
``fail_task``). So it never heartbeats while a batch runs: a long task makes it look silent.

It serves the ``interop`` flow of tests/e2e_apps/basic.py with the same handlers. Usage::

    python -m tests.support.edge_worker <url> <flow_slug> <worker_id> [heartbeat_interval]

It prints ``edge worker ready`` to stderr once registered, runs until SIGTERM, finishes its batch,
then prints ``{"executed": [[run_id, step_slug, task_index], ...]}`` to stdout.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query

# The edge worker's defaults (createFlowWorker at 0.8.1).
VISIBILITY = 2
BATCH_SIZE = 10
MAX_POLL_SECONDS = 2
POLL_INTERVAL_MS = 100
MAX_CONCURRENT = 10


def _inc(task_input: dict[str, Any]) -> Any:
    """``run.n + 1`` after ``run.sleep`` seconds, or once the file ``run.until`` exists."""
    run = task_input["run"]
    time.sleep(float(run.get("sleep", 0.0)))
    if "until" in run:
        while not Path(run["until"]).exists():
            time.sleep(0.05)
    return run["n"] + 1


def _dbl(task_input: dict[str, Any]) -> Any:
    return task_input["inc"] * 2


HANDLERS = {"inc": _inc, "dbl": _dbl}


def main(url: str, flow_slug: str, worker_id: str, heartbeat_interval: float = 5.0) -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    executed: list[list[Any]] = []
    report_lock = threading.Lock()

    with connect(url) as conn, connect(url) as reports:
        conn.execute(
            test_query("edge_worker_started"),
            {"queue_name": flow_slug, "worker_id": worker_id, "function_name": "edge-worker-0.8.1"},
        )
        print("edge worker ready", file=sys.stderr, flush=True)

        def execute(task: dict[str, Any]) -> None:
            key = {k: task[k] for k in ("run_id", "step_slug", "task_index")}
            try:
                output = HANDLERS[task["step_slug"]](task["input"])
            except Exception as exc:
                with report_lock:
                    reports.execute(
                        test_query("edge_worker_fail_task"), {**key, "error_message": str(exc)}
                    )
                return
            with report_lock:
                reports.execute(
                    test_query("edge_worker_complete_task"), {**key, "output": Jsonb(output)}
                )
                executed.append([str(task["run_id"]), task["step_slug"], task["task_index"]])

        last_heartbeat = 0.0
        with ThreadPoolExecutor(MAX_CONCURRENT) as pool:
            while not stopping.is_set():
                if time.monotonic() - last_heartbeat >= heartbeat_interval:
                    row = conn.execute(
                        test_query("edge_worker_heartbeat"), {"worker_id": worker_id}
                    ).fetchone()
                    last_heartbeat = time.monotonic()
                    if row is not None and row[0]:
                        break  # deprecated
                messages = conn.execute(
                    test_query("edge_worker_read"),
                    {
                        "queue_name": flow_slug,
                        "vt": VISIBILITY,
                        "qty": BATCH_SIZE,
                        "max_poll_seconds": MAX_POLL_SECONDS,
                        "poll_interval_ms": POLL_INTERVAL_MS,
                    },
                ).fetchall()
                if not messages or stopping.is_set():
                    continue
                cursor = conn.execute(
                    test_query("edge_worker_start_tasks"),
                    {
                        "flow_slug": flow_slug,
                        "msg_ids": [m[0] for m in messages],
                        "worker_id": worker_id,
                    },
                )
                columns = [c.name for c in cursor.description or ()]
                tasks = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
                # The whole batch is awaited before the next heartbeat, as upstream's loop does.
                for future in [pool.submit(execute, task) for task in tasks]:
                    future.result()
    print(json.dumps({"executed": executed}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], args[2], *(float(a) for a in args[3:4]))
