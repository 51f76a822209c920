"""Cron evaluation of schedules (no database): ticks, time zones, catch-up policies, checks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.errors import ConfigurationError, FlowDefinitionError
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.schedules import ScheduleSpec, due_ticks, next_tick

UTC = timezone.utc
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_seconds_are_the_sixth_field() -> None:
    assert next_tick("* * * * * *", "UTC", T0) == T0 + timedelta(seconds=1)
    assert next_tick("* * * * * */10", "UTC", T0 + timedelta(seconds=3)) == T0 + timedelta(
        seconds=10
    )
    assert next_tick("*/5 * * * *", "UTC", T0) == T0 + timedelta(minutes=5)


def test_ticks_are_computed_in_the_schedule_time_zone() -> None:
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
    assert next_tick("0 9 * * *", "Europe/Berlin", T0) == datetime(2026, 1, 2, 8, tzinfo=UTC)
    july = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert next_tick("0 9 * * *", "Europe/Berlin", july) == datetime(2026, 7, 2, 7, tzinfo=UTC)


def test_dst_gap_fires_after_the_gap_and_overlap_fires_twice() -> None:
    # 2026-03-29 02:30 does not exist in Berlin: croniter moves it to 03:00 local (01:00 UTC).
    before_gap = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert next_tick("30 2 * * *", "Europe/Berlin", before_gap) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    # 2026-10-25 02:30 happens twice (CEST then CET): both occurrences are ticks.
    first = next_tick("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC))
    second = next_tick("30 2 * * *", "Europe/Berlin", first)
    assert (first, second) == (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    )


def ticks(policy: str, *, gap: float, grace: float = 5.0, limit: int = 100) -> Any:
    now = T0 + timedelta(seconds=gap, milliseconds=300)
    return due_ticks(
        "* * * * * *",
        "UTC",
        next_tick_at=T0 + timedelta(seconds=1),
        now=now,
        catch_up=policy,
        catch_up_limit=limit,
        misfire_grace=grace,
    )


def test_ticks_within_the_grace_always_start() -> None:
    for policy in ("none", "latest", "all"):
        fired, skipped = ticks(policy, gap=3)
        assert fired == [T0 + timedelta(seconds=s) for s in (1, 2, 3)], policy
        assert skipped == 0


def test_catch_up_none_skips_missed_ticks() -> None:
    fired, skipped = ticks("none", gap=100, grace=5)
    # now = T0+100.3: ticks 96..100 lie within the grace (>= T0+95.3).
    assert fired == [T0 + timedelta(seconds=s) for s in range(96, 101)]
    assert skipped == 95


def test_catch_up_latest_starts_one_run_for_the_gap() -> None:
    fired, skipped = ticks("latest", gap=100, grace=0)
    assert fired == [T0 + timedelta(seconds=100)]
    assert skipped == 99


def test_catch_up_all_is_bounded_by_the_limit() -> None:
    fired, skipped = ticks("all", gap=100, grace=0, limit=10)
    assert fired == [T0 + timedelta(seconds=s) for s in range(91, 101)]
    assert skipped == 90
    fired, skipped = ticks("all", gap=20, grace=0, limit=100)
    assert fired == [T0 + timedelta(seconds=s) for s in range(1, 21)]
    assert skipped == 0


def test_nothing_is_due_before_the_next_tick() -> None:
    before = T0 - timedelta(seconds=1)
    due = due_ticks(
        "* * * * *",
        "UTC",
        next_tick_at=T0,
        now=before,
        catch_up="none",
        catch_up_limit=100,
        misfire_grace=30.0,
    )
    assert due == ([], 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "every minute"}, "invalid cron expression"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"catch_up": "some"}, "catch_up must be one of"),
        ({"catch_up_limit": 0}, "catch_up_limit must be"),
        ({"misfire_grace": -1}, "misfire_grace must be"),
        ({"input": {"x": float("nan")}}, "not JSON"),
    ],
)
def test_bad_schedules_are_refused(options: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"flow_slug": "f", "cron": "* * * * *", **options}
    with pytest.raises(ConfigurationError, match=message):
        ScheduleSpec(**kwargs)


def test_schedules_in_code() -> None:
    app = PgFlow("postgresql://nobody@127.0.0.1:1/none")

    @app.task(schedule="*/5 * * * *")
    def cleanup() -> int:
        return 1

    report = app.flow("report", schedule="0 6 * * *")

    @report.step
    def build(run: dict[str, Any]) -> dict[str, Any]:
        return run

    nightly = app.schedule(report, cron="0 2 * * *", name="report-nightly", input={"full": True})
    assert [s.name for s in app.schedules] == ["cleanup", "report", "report-nightly"]
    assert cleanup.flow.schedules[0].input == {}
    assert nightly.input == {"full": True} and nightly.flow_slug == "report"
    with pytest.raises(ConfigurationError, match="already has a schedule named"):
        app.schedule(report, cron="0 3 * * *")


def test_a_scheduled_task_must_be_callable_without_arguments() -> None:
    app = PgFlow("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(FlowDefinitionError, match="starts it with no arguments"):

        @app.task(schedule="* * * * *")
        def send(to: str) -> None: ...

    flow = Flow("plain")
    assert flow.add_schedule("* * * * *", input={"a": 1}).input == {"a": 1}
