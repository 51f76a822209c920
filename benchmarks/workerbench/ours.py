"""pgflow-kombu: ``pgflow-kombu worker -c 4`` (thread pool) on an ``@app.task`` job."""

from __future__ import annotations

import os
import sys
import threading
import uuid

from benchmarks.workerbench.system import Counter, WorkerProcess
from benchmarks.workerbench.tasks import RUN_TAG, app


def fresh_database(admin_url: str, name: str) -> str:
    """Drop and create database ``name`` on the server; return its URL."""
    from pgflow_kombu.db.admin import create_database, drop_database
    from pgflow_kombu.db.connect import connect
    from pgflow_kombu.db.urls import with_database

    with connect(admin_url) as conn:
        drop_database(conn, name)
        create_database(conn, name)
    return with_database(admin_url, name)


def remove_database(admin_url: str, name: str) -> None:
    from pgflow_kombu.db.admin import drop_database
    from pgflow_kombu.db.connect import connect

    with connect(admin_url) as conn:
        drop_database(conn, name)


class Ours(WorkerProcess):
    name = "pgflow-kombu"
    durable = True  # start_flow commits synchronously
    has_batch = True

    def __init__(self, admin_url: str, *, pool: str = "threads") -> None:
        self.admin_url = admin_url
        self.database = f"{RUN_TAG}_ours_{os.getpid()}"
        self.pool = pool
        self._done = 0
        self._finished: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def setup(self) -> None:
        from pgflow_kombu.client import Client
        from pgflow_kombu.db import migrations

        assert self.database is not None
        self.url = fresh_database(self.admin_url, self.database)
        migrations.upgrade(self.url)
        # Up to four producer threads, each with a connection of its own.
        self.client = Client(self.url, pool_min_size=1, pool_max_size=5)
        for flow in app.flows.values():
            self.client.compile_flow(flow.shape())
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        """Count completions from the run-finished NOTIFY (no polling)."""
        from pgflow_kombu.db.connect import connect
        from pgflow_kombu.db.queries import query

        with connect(self.url) as conn:
            conn.execute(query("client.listen_runs"))
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    run_id, _, status = note.payload.partition(":")
                    with self._lock:
                        if status == "completed":
                            self._done += 1
                        event = self._finished.pop(run_id, None)
                    if event is not None:
                        event.set()

    def teardown(self) -> None:
        self.stop_worker()
        self._stop.set()
        self._listener.join(5)
        self.client.close()
        assert self.database is not None
        remove_database(self.admin_url, self.database)

    def command(self) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "pgflow_kombu", "--database-url", self.url, "worker"]
        command += ["-A", "benchmarks.workerbench.tasks:app", "-c", "4", "-P", self.pool]
        return [*command, "-l", "warning"], {}

    def reset(self) -> None:
        with self._lock:
            self._done = 0

    def counter(self) -> Counter:
        return Counter(lambda: self._done, self.check_worker)

    def enqueue(self, i: int) -> None:
        self.client.start_flow("bench_noop", {"i": i})

    def enqueue_batch(self, items: range) -> None:
        self.client.start_many("bench_noop", [{"i": i} for i in items])

    def enqueue_diamond(self, i: int) -> None:
        self.client.start_flow("bench_diamond", i)

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        run_id = uuid.uuid4()
        event = threading.Event()
        with self._lock:
            self._finished[str(run_id)] = event
        self.client.start_flow("bench_stamp", {"i": i}, run_id=run_id)
        waited = 0.0
        while not event.wait(0.2):
            self.check_worker()
            waited += 0.2
            if waited > timeout:
                raise TimeoutError("stamp job did not finish")
        with self._lock:
            self._done -= 1  # not part of any count
        output = self.client.get_run(run_id).output
        return float(output["bench_stamp"])
