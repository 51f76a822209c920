"""What ``pgflow_kombu.report_tasks`` answers is parsed once, into :class:`ReportResult`, and every
member is handled where the worker reads it; a value the package does not know is refused."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pgflow_kombu.errors import UnexpectedReply
from pgflow_kombu.observability.hooks import Hooks
from pgflow_kombu.worker.events import WorkerEvents
from pgflow_kombu.worker.link import Link
from pgflow_kombu.worker.reporter import Reporter, parse_report_rows
from pgflow_kombu.worker.status import WorkerStats
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome, ReportResult

MIGRATION = Path(__file__).resolve().parents[2] / "sql" / "migrations" / "0030_worker.sql"


def task(index: int = 0) -> ClaimedTask:
    return ClaimedTask("f", str(uuid.uuid4()), "s", index, 1, None, 1, 10.0, "w-1")


def test_the_enum_names_exactly_the_outcomes_the_sql_function_returns() -> None:
    returned = set(re.findall(r"outcome := '(\w+)'", MIGRATION.read_text()))
    assert returned == {m.value for m in ReportResult}


def test_an_unknown_outcome_is_refused_with_its_name() -> None:
    with pytest.raises(UnexpectedReply, match="'archived'") as caught:
        ReportResult.parse("archived")
    assert "'completed'" in str(caught.value)  # and says what it knows
    with pytest.raises(UnexpectedReply, match="None"):
        ReportResult.parse(None)
    with pytest.raises(UnexpectedReply, match="'Completed'"):
        parse_report_rows([(1, "completed", None, None, None), (2, "Completed", None, None, None)])


def test_members_are_strings_that_print_as_their_value() -> None:
    assert ReportResult.parse("stale") is ReportResult.STALE
    assert str(ReportResult.RETRY) == "retry" and f"{ReportResult.FAILED}" == "failed"
    assert isinstance(ReportResult.COMPLETED, str)


@pytest.mark.parametrize("result", list(ReportResult))
def test_every_member_is_counted_and_given_to_the_hooks(result: ReportResult) -> None:
    stats = WorkerStats()
    stats.count_report(result)
    counted = {k: v for k, v in stats.as_dict().items() if v}
    expected = {
        ReportResult.COMPLETED: {"completed": 1},
        ReportResult.FAILED: {"failed": 1},
        ReportResult.REJECTED: {"failed": 1},
        ReportResult.STALE: {"stale": 1},
        ReportResult.RETRY: {},
    }
    assert counted == expected[result]

    hooks, seen = Hooks(), list[object]()
    for name in ("task_succeeded", "task_failed", "task_retried"):
        hooks.on(name, seen.append)
    WorkerEvents(hooks).settled([(Outcome(task(), output=1), result, False, None)])
    names = [type(e).__name__ for e in seen]
    if result is ReportResult.COMPLETED:
        assert names == ["TaskSucceeded"]
    elif result in (ReportResult.FAILED, ReportResult.REJECTED):
        assert names == ["TaskFailed"]
    else:
        assert names == []


def test_the_reporter_sorts_a_batch_by_what_the_database_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One report of each kind in one batch: all but 'retry' are settled, and only the applied
    ones reach the hooks; the 'retry' one goes out again in the next batch."""
    members = list(ReportResult)
    batches: list[list[dict[str, Any]]] = []

    def fetch(self: Link, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        assert params is not None
        reports = params["reports"].obj
        batches.append(reports)
        if len(batches) == 1:
            return [(i + 1, m.value, None, None, None) for i, m in enumerate(members)]
        return [(i + 1, "completed", None, None, None) for i in range(len(reports))]

    monkeypatch.setattr(Link, "fetch", fetch)
    reported: list[tuple[Outcome, ReportResult]] = []
    settled: list[tuple[Outcome, ReportResult, bool | None, str | None]] = []
    every = threading.Event()  # the retried report came back too

    def on_reported(done: list[tuple[Outcome, ReportResult]]) -> None:
        reported.extend(done)
        if len(reported) == len(members):
            every.set()

    reporter = Reporter(
        "postgresql://nobody@127.0.0.1:1/none",
        on_reported,
        connections=1,
        on_settled=settled.extend,
    )
    outcomes = [Outcome(task(i), output=i) for i in range(len(members))]
    for outcome in outcomes:
        reporter.put(outcome)
    reporter.start()
    assert every.wait(10), reported
    assert reporter.stop(5) == 0
    first = {o.task.task_index: r for o, r in reported[: len(members) - 1]}
    assert first == {i: m for i, m in enumerate(members) if m is not ReportResult.RETRY}
    retried = members.index(ReportResult.RETRY)
    assert reported[-1] == (outcomes[retried], ReportResult.COMPLETED)
    assert [len(b) for b in batches] == [len(members), 1]
    assert {r for _, r, _, _ in settled} == {
        ReportResult.COMPLETED,
        ReportResult.FAILED,
        ReportResult.REJECTED,
    }
    assert reporter.retried == 1


def test_an_unknown_outcome_is_logged_by_name_and_the_batch_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema newer than the package: nothing is counted as done; the reports stay queued and
    the error names the value."""
    calls: list[int] = []

    def fetch(self: Link, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        calls.append(1)
        return [(1, "archived", None, None, None)]

    monkeypatch.setattr(Link, "fetch", fetch)
    reported: list[Any] = []
    reporter = Reporter("postgresql://nobody@127.0.0.1:1/none", reported.extend, connections=1)
    reporter.put(Outcome(task(), output=1))
    with caplog.at_level(logging.ERROR, logger="pgflow_kombu.worker"):
        reporter.start()
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        left = reporter.stop(0)
    assert reported == [] and left == 1
    assert any("'archived'" in r.getMessage() for r in caplog.records), caplog.text
