"""Durations as written on the command line, and the worker's per-run cancellation flags."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from pgflow_kombu.durations import parse_duration
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows import StepContext
from pgflow_kombu.worker.cancellation import Cancellations
from pgflow_kombu.worker.execution import context_of
from pgflow_kombu.worker.tasks import ClaimedTask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2w", timedelta(weeks=2)),
        (" 1.5H ", timedelta(hours=1.5)),
        ("90", timedelta(seconds=90)),
        (0, timedelta(0)),
        (timedelta(days=1), timedelta(days=1)),
    ],
)
def test_durations(text: str | float | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7x", "d7", "7d junk", "-1d", "-5", "inf", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_duration(text)  # type: ignore[arg-type]


def task(run_id: str, index: int = 0) -> ClaimedTask:
    return ClaimedTask("f", run_id, "s", index, index + 1, None, 1, 60.0, "w")


def test_tasks_of_one_run_share_a_flag_that_their_context_reads() -> None:
    cancellations = Cancellations()
    told: list[str] = []
    cancellations.listeners.append(told.append)
    a, b, other = task("r1", 0), task("r1", 1), task("r2")
    for each in (a, b, other):
        cancellations.watch(each)
    assert a.cancel is b.cancel and a.cancel is not other.cancel
    ctx = context_of(a)
    assert isinstance(ctx, StepContext) and not ctx.cancelled
    assert sorted(cancellations.held_runs()) == ["r1", "r2"]

    cancellations.cancel(["r1"])
    assert ctx.cancelled and b.cancelled and not other.cancelled
    assert told == ["r1"]
    assert cancellations.held_runs() == ["r2"]  # no need to ask again
    cancellations.cancel(["r1"])
    assert told == ["r1"]  # told once

    cancellations.forget(a)
    cancellations.forget(b)
    cancellations.forget(other)
    assert cancellations.held_runs() == []
    cancellations.cancel(["r2"])  # no longer held: nothing to tell
    assert told == ["r1"]


def test_an_eager_context_is_never_cancelled() -> None:
    assert StepContext("f", "s").cancelled is False
    event = threading.Event()
    ctx = StepContext("f", "s", cancel_event=event)
    event.set()
    assert ctx.cancelled


def _retention_of(args: list[str], env: dict[str, str] | None = None) -> object:
    import click
    from click.testing import CliRunner

    from pgflow_kombu.worker.command import worker_options, worker_settings

    seen: dict[str, object] = {}

    @click.command()
    @worker_options()
    def command(**options: object) -> None:
        seen["retention"] = worker_settings(options).retention

    result = CliRunner().invoke(command, ["-A", "x:app", *args], env=env)
    return seen.get("retention") if result.exit_code == 0 else result.output


def test_the_worker_takes_a_retention_option_or_its_environment_variable() -> None:
    assert _retention_of([]) is None
    assert _retention_of(["--retention", "7d"]) == timedelta(days=7)
    assert _retention_of([], {"PGFLOW_WORKER_RETENTION": "12h"}) == timedelta(hours=12)
    refused = _retention_of(["--retention", "a week"])
    assert isinstance(refused, str) and "not a duration" in refused


def test_a_worker_with_retention_checks_it_before_touching_the_database() -> None:
    from pgflow_kombu.flows import Flow
    from pgflow_kombu.worker import Worker

    flow = Flow("f")

    @flow.step
    def s(run: int) -> int:
        return run

    url = "postgresql://nobody@127.0.0.1:1/none"
    worker = Worker({"f": flow}, url, retention="30m", retention_interval=60)
    assert worker.retention is not None
    assert (worker.retention.retention, worker.retention.interval) == (timedelta(minutes=30), 60)
    assert Worker({"f": flow}, url).retention is None
    with pytest.raises(ConfigurationError, match="not a duration"):
        Worker({"f": flow}, url, retention="soon")
    with pytest.raises(ConfigurationError, match="retention_interval"):
        Worker({"f": flow}, url, retention="1d", retention_interval=0)


def test_a_task_of_a_cancelled_run_that_waited_for_a_slot_is_not_run() -> None:
    import asyncio

    from pgflow_kombu.flows import Flow
    from pgflow_kombu.worker.execution import aexecute, execute

    calls: list[int] = []
    flow = Flow("f")

    @flow.step
    def s(run: int) -> int:
        calls.append(run)
        return run

    waiting = ClaimedTask("f", "r1", "s", 0, 1, {"run": 5}, 1, 60.0, "w")
    assert execute({"f": flow}, waiting).output == 5
    cancellations = Cancellations()
    cancellations.watch(waiting)
    cancellations.cancel(["r1"])
    assert execute({"f": flow}, waiting).error == "CancelledError: run r1 was cancelled"

    async def run_sync(call: object) -> object:
        raise AssertionError("not called")

    result = asyncio.run(aexecute({"f": flow}, waiting, run_sync))
    assert result.error == "CancelledError: run r1 was cancelled"
    assert calls == [5]


def test_the_cli_reads_ages_as_durations_before_now() -> None:
    from datetime import datetime, timezone

    from pgflow_kombu.cli import Moment

    before = datetime.now(timezone.utc)
    moment = Moment().convert("1h30m", None, None)
    assert before - timedelta(hours=1, minutes=31) < moment <= before - timedelta(minutes=89)
    assert Moment().convert("2026-01-02", None, None) == datetime(2026, 1, 2, tzinfo=timezone.utc)
