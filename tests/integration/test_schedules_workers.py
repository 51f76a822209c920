"""A per-second schedule served by four workers at once: every tick starts exactly one run."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.flows.schedules import next_tick
from pgflow_kombu.worker import Worker
from tests.e2e_apps.harness import WorkerProcess
from tests.support.sql import test_query

pytestmark = pytest.mark.slow  # each watches a schedule for a fixed window

WINDOW = 60  # seconds of schedule observed


def sql(db_url: str, query_name: str, **params: Any) -> list[Any]:
    with connect(db_url) as conn:
        cur = conn.execute(test_query(query_name), params)
        return cur.fetchall() if cur.description is not None else []


def db_now(db_url: str) -> datetime:
    now: datetime = sql(db_url, "db_clock")[0][0]
    return now


def expected_ticks(created: datetime, end: datetime) -> list[datetime]:
    """The per-second ticks after ``created`` up to ``end``."""
    found = []
    tick = next_tick("* * * * * *", "UTC", created)
    while tick <= end:
        found.append(tick)
        tick = next_tick("* * * * * *", "UTC", tick)
    return found


def test_four_workers_start_every_tick_of_a_per_second_schedule_once(db_url: str) -> None:
    app = PgFlow(db_url)

    @app.task(schedule="* * * * * *")
    def beat() -> str:
        return "ok"

    app.ensure_flow(beat.flow)
    workers = [
        Worker(
            app.flows,
            db_url,
            concurrency=2,
            heartbeat_interval=1.0,
            stalled_after=10.0,
            scheduler_poll_interval=1.0,
        )
        for _ in range(4)
    ]
    try:
        for worker in workers:
            worker.start()
        created = app.client.get_schedule("beat").created_at
        assert created is not None
        end = created + timedelta(seconds=WINDOW)
        while db_now(db_url) < end + timedelta(seconds=3):
            time.sleep(0.5)
        app.pause_schedule("beat")
        # Let the workers finish what the schedule started.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = int(sql(db_url, "runs_of_flow", flow_slug="beat")[0][0])
            if int(sql(db_url, "completed_runs_of_flow", flow_slug="beat")[0][0]) == runs:
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.request_stop()
        for worker in workers:
            worker.stop(10)

    # The ticks of the window: every second after the schedule was written, up to 60 s later.
    expected = expected_ticks(created, end)
    assert len(expected) == WINDOW

    ticks = sql(db_url, "ticks_of", name="beat")
    started = [t[0] for t in ticks]
    in_window = [t for t in started if t <= end]
    assert in_window == expected  # no tick missing, none twice, in order
    assert all(not manual and run_id is not None for _, manual, run_id in ticks)
    assert len({run_id for *_, run_id in ticks}) == len(ticks)
    runs = int(sql(db_url, "runs_of_flow", flow_slug="beat")[0][0])
    assert runs == len(ticks)  # no run without its tick
    by_worker = [w.scheduler.started_runs for w in workers if w.scheduler is not None]
    assert sum(by_worker) == runs
    median, worst = sql(db_url, "tick_lag", name="beat")[0]
    print(
        f"ticks in window {len(in_window)}, runs {runs}, started by worker {by_worker}, "
        f"tick to run start: median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms"
    )
    # The workers also ran every run the schedule started.
    assert int(sql(db_url, "completed_runs_of_flow", flow_slug="beat")[0][0]) == runs
    app.close()


def test_four_worker_processes_start_every_tick_once(db_url: str) -> None:
    """The same across processes: four ``pgflow-kombu worker`` commands, one of them with
    ``--no-scheduler``, for 20 s."""
    window = 20
    options = ["--heartbeat-interval", "1", "--stalled-after", "10", "-c", "2"]
    processes = [
        WorkerProcess(db_url, *options, *extra, app="tests.e2e_apps.scheduled:app")
        for extra in ([], [], [], ["--no-scheduler"])
    ]
    try:
        for process in processes:
            process.wait_ready()
        assert "beat (* * * * * *)" in processes[0].log  # the banner lists the schedule
        assert "scheduler off" in " ".join(processes[3].log.split())
        app = PgFlow(db_url)
        created = app.client.get_schedule("beat").created_at
        assert created is not None
        end = created + timedelta(seconds=window)
        while db_now(db_url) < end + timedelta(seconds=3):
            time.sleep(0.5)
        app.pause_schedule("beat")
        app.close()
    finally:
        for process in processes:
            process.signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
            process.__exit__(None)
    ticks = sql(db_url, "ticks_of", name="beat")
    assert [t[0] for t in ticks if t[0] <= end] == expected_ticks(created, end)
    assert len(expected_ticks(created, end)) == window
    assert int(sql(db_url, "runs_of_flow", flow_slug="beat")[0][0]) == len(ticks)
