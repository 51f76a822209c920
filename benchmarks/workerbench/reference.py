"""The reference: pgflow 0.8.1's own SQL (npm @pgflow/core, installed as the differential tests
install it) doing the same job flow, driven the way its TypeScript worker drives it.

The producer calls ``pgflow.start_flow`` per job; the worker (``python -m
benchmarks.workerbench.reference URL``, four threads, a connection each) loops on
``pgmq.read_with_poll`` (the edge worker's defaults: 10 at a time, polling every 100 ms),
``pgflow.start_tasks`` and ``pgflow.complete_task`` per task. A job is a run of a one-step flow;
its input says whether it is a stamp job (latency) or a counted no-op.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import Any

from benchmarks.workerbench.ours import fresh_database, remove_database
from benchmarks.workerbench.system import PerThread, RedisCounted, bench_query
from benchmarks.workerbench.tasks import RUN_TAG, count_done, stamp_started

FLOW = "bench_ref"
WORKER_THREADS = 4


def install(url: str) -> None:
    """The reference schema (a no-op ``realtime.send``) and the one-step flow."""
    from tests.reference import install as install_reference
    from tests.reference.driver import Db

    install_reference(url, realtime="noop")
    db = Db(url, "reference")
    try:
        db.call("create_flow", flow_slug=FLOW)
        db.call("add_step", flow_slug=FLOW, step_slug="only")
    finally:
        db.close()


class ReferenceSql(RedisCounted):
    name = "pgflow 0.8.1 SQL"
    durable = True
    has_diamond = False

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.database = f"{RUN_TAG}_ref_{os.getpid()}"
        self._connections: PerThread[Any] = PerThread(self._open, lambda conn: conn.close())

    def setup(self) -> None:
        assert self.database is not None
        self.url = fresh_database(self.admin_url, self.database)
        install(self.url)
        self.reset()

    def teardown(self) -> None:
        self.stop_worker()
        self._connections.close_all()
        assert self.database is not None
        remove_database(self.admin_url, self.database)

    def _open(self) -> Any:
        from pgflow_kombu.db.connect import connect

        return connect(self.url)

    def connection(self) -> Any:
        """This thread's connection (autocommit: one transaction per call, as pgflow's client)."""
        return self._connections.get()

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "benchmarks.workerbench.reference", self.url], {}

    def _start(self, payload: str) -> None:
        params = {"flow_slug": FLOW, "input": payload}
        self.connection().execute(bench_query("sqlcore_bench_start_flow"), params)

    def enqueue(self, i: int) -> None:
        self._start(f'{{"i": {i}}}')

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self._start(f'{{"i": {i}, "stamp": true}}')
        return self.wait_stamp(i, timeout)


def serve(url: str, stop: threading.Event) -> None:
    """One worker thread: read, claim, run, complete, until ``stop``."""
    from pgflow_kombu.db.connect import connect

    worker_id = uuid.uuid4()
    with connect(url) as conn:
        conn.execute(bench_query("sqlworker_register"), {"worker_id": worker_id, "queue": FLOW})
        while not stop.is_set():
            msg_ids = [
                row[0] for row in conn.execute(bench_query("bench_ref_read"), {"queue": FLOW})
            ]
            if not msg_ids:
                continue
            params = {"queue": FLOW, "msg_ids": msg_ids, "worker_id": worker_id}
            for run_id, step_slug, task_index, task_input in conn.execute(
                bench_query("bench_ref_start_tasks"), params
            ).fetchall():
                job = task_input["run"]
                if job.get("stamp"):
                    stamp_started(job["i"])
                where = {"run_id": run_id, "step_slug": step_slug, "task_index": task_index}
                conn.execute(
                    bench_query("sqlcore_bench_complete_task"), {**where, "output": "null"}
                )
                if not job.get("stamp"):
                    count_done()  # once its run completed, as ours counts


def main() -> None:
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [
        threading.Thread(target=serve, args=(sys.argv[1], stop)) for _ in range(WORKER_THREADS)
    ]
    for thread in threads:
        thread.start()
    # A stop lets every thread complete the tasks it claimed (within one 2 s poll), so that
    # no run is left started for the next phase.
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
