"""The CLI's manners that need no database: global options anywhere, progress without a
terminal, a retrying step's last error, the version, the worker's JSON log lines."""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from typing import Any

import pytest
from click.testing import CliRunner

from pgflow_kombu import cli_output
from pgflow_kombu.cli import cli
from pgflow_kombu.cli_globals import hoist_database_url
from pgflow_kombu.types import Run, StepState, StepTask
from pgflow_kombu.worker.logs import configure_logging, say


def test_database_url_is_hoisted_from_after_the_subcommand() -> None:
    assert hoist_database_url(["runs", "list", "--database-url", "U", "--json"]) == [
        "--database-url",
        "U",
        "runs",
        "list",
        "--json",
    ]
    assert hoist_database_url(["runs", "show", "--database-url=U", "X"]) == [
        "--database-url=U",
        "runs",
        "show",
        "X",
    ]
    # After "--" everything is an argument.
    assert hoist_database_url(["runs", "--", "--database-url", "U"]) == [
        "runs",
        "--",
        "--database-url",
        "U",
    ]


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("pgflow-kombu ") and "(pgflow core 0.8.1)" in result.output


URL = ["--database-url", "postgresql://x/y"]


def test_worker_takes_the_app_given_before_the_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(url: str, settings: Any, **options: Any) -> int:
        seen.update(options, url=url)
        return 0

    monkeypatch.setattr("pgflow_kombu.worker.command.run_command", fake_run)
    # The command exports the URL it uses: restored after the test.
    monkeypatch.setenv("PGFLOW_DATABASE_URL", "postgresql://x/y")
    monkeypatch.delenv("PGFLOW_APP", raising=False)
    monkeypatch.delenv("PGFLOW_WORKER_APP", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, [*URL, "-A", "pkg:app", "worker"])
    assert result.exit_code == 0, result.output
    assert seen["app_ref"] == "pkg:app" and seen["url"] == "postgresql://x/y"
    # Its own -A wins over one before the subcommand; an environment -A loses to both.
    monkeypatch.setenv("PGFLOW_APP", "from:env")
    runner.invoke(cli, [*URL, "-A", "before:app", "worker", "-A", "own:app"])
    assert seen["app_ref"] == "own:app"
    runner.invoke(cli, [*URL, "-A", "before:app", "worker"])
    assert seen["app_ref"] == "before:app"
    runner.invoke(cli, [*URL, "worker"])
    assert seen["app_ref"] == "from:env"
    monkeypatch.delenv("PGFLOW_APP")
    missing = runner.invoke(cli, [*URL, "worker"])
    assert missing.exit_code == 2 and "Missing option '-A'" in missing.output


def run_with(states: tuple[StepState, ...]) -> Run:
    return Run(run_id=uuid.uuid4(), flow_slug="f", status="started", step_states=states)


def test_runs_show_gives_a_retrying_steps_last_error(capsys: pytest.CaptureFixture[str]) -> None:
    run_id = uuid.uuid4()
    task = StepTask(
        run_id=run_id,
        flow_slug="f",
        step_slug="only",
        task_index=0,
        status="queued",
        attempts_count=2,
        error_message="OSError: disk full",
    )
    state = StepState(
        run_id=run_id,
        flow_slug="f",
        step_slug="only",
        status="started",
        remaining_deps=0,
        tasks=(task,),
    )
    cli_output.show_run(run_with((state,)))
    shown = capsys.readouterr().out
    assert "retrying (attempt 2 failed): OSError: disk full" in shown


def test_progress_without_a_terminal_prints_a_line_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [100.0]
    monkeypatch.setattr("pgflow_kombu.cli_output.time.monotonic", lambda: clock[0])
    progress = cli_output.Progress()  # stderr is captured: not a terminal
    assert not progress.live and progress.interval == cli_output.PROGRESS_EVERY
    run = run_with(())
    progress.update(run)
    assert capsys.readouterr().err == ""  # nothing for a wait that ends at once
    clock[0] += cli_output.PROGRESS_EVERY
    progress.update(run)
    assert f"waiting for run {run.run_id} (5 s): started" in capsys.readouterr().err
    clock[0] += 1
    progress.update(run)
    assert capsys.readouterr().err == ""  # not more often than every PROGRESS_EVERY
    clock[0] += cli_output.PROGRESS_EVERY
    progress.update(run)
    assert "(11 s)" in capsys.readouterr().err


@pytest.mark.filterwarnings("always::DeprecationWarning")
def test_say_is_json_when_the_log_format_is(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    logging.captureWarnings(False)  # undo an earlier test's, whose warnings pytest restored
    try:
        configure_logging("info", "json")
        say("worker 1\n  app  x", event="worker_banner", fields={"app": "x"})
        say("error: boom", event="worker_startup_failed", level=logging.ERROR)
        lines = capsys.readouterr().err.splitlines()
        entries = [json.loads(line) for line in lines]
        assert [e["event"] for e in entries] == ["worker_banner", "worker_startup_failed"]
        assert entries[0]["message"] == "worker 1" and entries[0]["app"] == "x"
        assert entries[1]["level"] == "error"
        warnings.warn("old option", DeprecationWarning, stacklevel=1)
        warned = json.loads(capsys.readouterr().err)
        assert warned["logger"] == "py.warnings" and "old option" in warned["message"]
        configure_logging("info", "text")
        say("worker 1\n  app  x", event="worker_banner")
        assert capsys.readouterr().err == "worker 1\n  app  x\n"
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
