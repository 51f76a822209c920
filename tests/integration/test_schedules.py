"""Schedules against a real database: firing (once per tick across schedulers), catch-up
policies, pause/resume/trigger, schedules written from code, the CLI."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from pgflow_kombu import PgFlow
from pgflow_kombu.cli import cli
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import ScheduleNotFound
from pgflow_kombu.flows.schedules import next_tick
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.scheduler import Scheduler
from tests.support.sql import test_query


@pytest.fixture
def app(db_url: str) -> Iterator[PgFlow]:
    application = PgFlow(db_url)

    @application.task
    def tick(label: str = "cron") -> str:
        return label

    application.ensure_flow(application.get_flow("tick"))
    yield application
    application.close()


def sql(db_url: str, query_name: str, **params: Any) -> list[Any]:
    with connect(db_url) as conn:
        cur = conn.execute(test_query(query_name), params)
        return cur.fetchall() if cur.description is not None else []


def runs(db_url: str) -> int:
    return int(sql(db_url, "runs_of_flow", flow_slug="tick")[0][0])


def db_now(db_url: str) -> datetime:
    now: datetime = sql(db_url, "db_clock")[0][0]
    return now


def backdate(db_url: str, name: str, seconds: float) -> datetime:
    """Make the schedule's next tick lie ``seconds`` in the past (workers were away)."""
    at = db_now(db_url).replace(microsecond=0) - timedelta(seconds=seconds)
    sql(db_url, "set_next_tick", name=name, at=at)
    return at


@pytest.fixture
def scheduler(db_url: str) -> Iterator[Scheduler]:
    s = Scheduler(db_url)
    yield s
    s.stop()


def test_catch_up_none_skips_what_was_missed(
    app: PgFlow, db_url: str, scheduler: Scheduler
) -> None:
    app.client.create_schedule("tick", "* * * * * *", name="every-second", misfire_grace=3)
    backdate(db_url, "every-second", 120)
    started = scheduler.run_once()
    # Only the ticks of the last 3 s (the grace), not the 120 before them.
    assert 3 <= started <= 5
    assert runs(db_url) == started
    schedule = app.client.get_schedule("every-second")
    assert schedule.next_tick_at > schedule.last_tick_at  # type: ignore[operator]
    assert scheduler.run_once() == 0  # nothing due again until the next second


def test_catch_up_latest_starts_one_run_for_the_gap(
    app: PgFlow, db_url: str, scheduler: Scheduler
) -> None:
    app.client.create_schedule(
        "tick", "*/5 * * * *", name="five-minutes", catch_up="latest", misfire_grace=0
    )
    backdate(db_url, "five-minutes", 3600)
    assert scheduler.run_once() == 1
    ticks = sql(db_url, "ticks_of", name="five-minutes")
    assert len(ticks) == 1 and ticks[0][0].minute % 5 == 0
    assert ticks[0][0] > db_now(db_url) - timedelta(minutes=5)  # the newest due tick


def test_catch_up_all_starts_every_missed_tick_up_to_the_limit(
    app: PgFlow, db_url: str, scheduler: Scheduler
) -> None:
    app.client.create_schedule(
        "tick", "* * * * *", name="minutely", catch_up="all", catch_up_limit=1000, misfire_grace=0
    )
    start = backdate(db_url, "minutely", 30 * 60)
    started = scheduler.run_once()
    expected = []
    tick = next_tick("* * * * *", "UTC", start - timedelta(microseconds=1))
    while tick <= db_now(db_url):
        expected.append(tick)
        tick = next_tick("* * * * *", "UTC", tick)
    assert [t[0] for t in sql(db_url, "ticks_of", name="minutely")] == expected
    assert started == len(expected) == runs(db_url)
    assert 30 <= started <= 31

    app.client.create_schedule(
        "tick", "* * * * *", name="bounded", catch_up="all", catch_up_limit=7, misfire_grace=0
    )
    backdate(db_url, "bounded", 30 * 60)
    assert scheduler.run_once() == 7  # the newest 7 of ~30 missed ticks


def test_old_ticks_are_trimmed_and_never_started_again(app: PgFlow, db_url: str) -> None:
    app.client.create_schedule(
        "tick", "* * * * * *", name="trimmed", catch_up="all", catch_up_limit=30
    )
    start = backdate(db_url, "trimmed", 29)
    scheduler = Scheduler(db_url, ticks_kept=10)
    try:
        started = scheduler.run_once()
        assert started >= 30
        kept = [t[0] for t in sql(db_url, "ticks_of", name="trimmed")]
        assert len(kept) == 10 and kept[0] > start + timedelta(seconds=15)
        # Going back in time (as a changed cron would) starts nothing twice: the runs'
        # idempotency keys outlive the trimmed tick rows.
        sql(db_url, "set_next_tick", name="trimmed", at=start)
        scheduler.run_once()
        assert runs(db_url) == started + len(
            [t for t in sql(db_url, "ticks_of", name="trimmed") if t[0] > kept[-1]]
        )
    finally:
        scheduler.stop()


def test_many_schedulers_start_each_tick_once(app: PgFlow, db_url: str) -> None:
    app.client.create_schedule(
        "tick", "* * * * * *", name="contended", catch_up="all", catch_up_limit=500
    )
    backdate(db_url, "contended", 300)
    schedulers = [Scheduler(db_url) for _ in range(8)]
    for s in schedulers:
        s.seconds_to_next_tick()  # connected before the barrier
    barrier = threading.Barrier(len(schedulers))
    errors: list[BaseException] = []

    def fire(s: Scheduler) -> None:
        try:
            barrier.wait(10)
            s.run_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for s in schedulers:
        s.stop()
    assert not errors
    ticks = sql(db_url, "ticks_of", name="contended")
    times = [t[0] for t in ticks]
    assert sum(s.started_runs for s in schedulers) == len(ticks) == runs(db_url)
    assert len(set(times)) == len(times) >= 300
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_pause_resume_and_trigger(app: PgFlow, db_url: str, scheduler: Scheduler) -> None:
    app.client.create_schedule("tick", "* * * * * *", name="pausable", input={"label": "p"})
    app.pause_schedule("pausable")
    assert app.client.get_schedule("pausable").status == "paused"
    backdate(db_url, "pausable", 10)
    assert scheduler.run_once() == 0  # paused: nothing fires

    handle = app.trigger_schedule("pausable")  # trigger works while paused
    assert handle.flow_slug == "tick"
    assert app.client.get_run(handle.run_id).input == {"label": "p"}
    ticks = sql(db_url, "ticks_of", name="pausable")
    assert [(t[1], t[2]) for t in ticks] == [(True, handle.run_id)]

    before = db_now(db_url)
    resumed = app.resume_schedule("pausable")
    assert resumed.status == "active"
    assert resumed.next_tick_at > before  # the ticks due during the pause are not caught up
    scheduler.run_once()
    cron_ticks = [t[0] for t in sql(db_url, "ticks_of", name="pausable") if not t[1]]
    assert all(t >= resumed.next_tick_at for t in cron_ticks)
    assert runs(db_url) == 1 + len(cron_ticks)

    for call in (app.pause_schedule, app.resume_schedule, app.trigger_schedule):
        with pytest.raises(ScheduleNotFound):
            call("missing")


def test_worker_writes_code_schedules_and_disables_removed_ones(db_url: str) -> None:
    def build(with_schedule: bool) -> PgFlow:
        app = PgFlow(db_url)

        @app.task(schedule="*/5 * * * *" if with_schedule else None)
        def cleanup() -> None: ...

        return app

    def start_and_stop(app: PgFlow) -> None:
        worker = Worker(
            app.flows, db_url, scheduler=False, heartbeat_interval=0.5, stalled_after=3.0
        )
        worker.start()
        worker.stop(5)

    first = build(True)
    start_and_stop(first)
    [stored] = first.list_schedules()
    assert (stored.name, stored.cron, stored.source, stored.status) == (
        "cleanup",
        "*/5 * * * *",
        "code",
        "active",
    )
    first.pause_schedule("cleanup")
    start_and_stop(first)  # a restart keeps the pause and the next tick
    again = first.client.get_schedule("cleanup")
    assert again.status == "paused" and again.next_tick_at == stored.next_tick_at

    start_and_stop(build(False))  # the code no longer defines it: disabled, not deleted
    assert first.client.get_schedule("cleanup").status == "removed"
    start_and_stop(build(True))  # defined again: back, still paused by hand
    assert first.client.get_schedule("cleanup").status == "paused"
    first.close()


def test_cli_schedules(app: PgFlow, db_url: str) -> None:
    app.client.create_schedule("tick", "0 * * * *", name="hourly", timezone="Europe/Berlin")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        result = runner.invoke(cli, ["--database-url", db_url, "schedules", *args])
        return result

    listed = invoke("list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["name"], row["timezone"], row["status"]) == ("hourly", "Europe/Berlin", "active")
    assert invoke("pause", "hourly").exit_code == 0
    assert "paused" in invoke("list").output
    triggered = invoke("trigger", "hourly", "--json")
    assert triggered.exit_code == 0
    assert app.client.get_run(json.loads(triggered.output)["run_id"]).flow_slug == "tick"
    assert invoke("resume", "hourly").exit_code == 0
    assert app.client.get_schedule("hourly").status == "active"
    assert invoke("pause", "nope").exit_code != 0
    assert invoke("delete", "hourly").exit_code == 0
    assert app.list_schedules() == []


def test_schedules_and_keys_on_either_schema(any_schema_url: str) -> None:
    """On our schema and on upstream pgflow 0.8.1 with our objects on top, alike."""
    app = PgFlow(any_schema_url)

    @app.task
    def tick(label: str = "cron") -> str:
        return label

    try:
        first = app.start_flow("tick", {}, idempotency_key="same")
        assert app.start_flow("tick", {}, idempotency_key="same").run_id == first.run_id
        app.client.create_schedule("tick", "* * * * * *", name="s", catch_up="all")
        backdate(any_schema_url, "s", 5)
        scheduler = Scheduler(any_schema_url)
        try:
            assert scheduler.run_once() >= 5
        finally:
            scheduler.stop()
        assert runs(any_schema_url) == 1 + len(sql(any_schema_url, "ticks_of", name="s"))
    finally:
        app.close()
