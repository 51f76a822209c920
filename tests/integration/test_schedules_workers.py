"""A per-second schedule served by four workers at once: every tick starts exactly one run."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.flows.schedules import next_tick
from pgflow_kombu.worker import Worker
from tests.support.sql import test_query

WINDOW = 60  # seconds of schedule observed


def sql(db_url: str, query_name: str, **params: Any) -> list[Any]:
    with connect(db_url) as conn:
        cur = conn.execute(test_query(query_name), params)
        return cur.fetchall() if cur.description is not None else []


def db_now(db_url: str) -> datetime:
    now: datetime = sql(db_url, "db_clock")[0][0]
    return now


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
    expected = []
    tick = next_tick("* * * * * *", "UTC", created)
    while tick <= end:
        expected.append(tick)
        tick = next_tick("* * * * * *", "UTC", tick)
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
    print(f"ticks in window {len(in_window)}, runs {runs}, started by worker {by_worker}")
    # The workers also ran every run the schedule started.
    assert int(sql(db_url, "completed_runs_of_flow", flow_slug="beat")[0][0]) == runs
    app.close()
