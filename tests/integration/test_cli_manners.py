"""The CLI as a Celery user expects it, end to end: global options before or after the
subcommand, db status --json, timeouts that say what to do, progress in logs, JSON worker logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pgflow_kombu import PgFlow
from pgflow_kombu.cli import EXIT_TIMEOUT
from tests.integration.test_seed_cli_app import APP_MODULE, cli_environment, worker_rows
from tests.support.sqlworker import drain

WORKER = [sys.executable, "-m", "pgflow_kombu", "-A", "seedapp:app", "worker"]


def run(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgflow_kombu", *args],
        cwd=tmp_path,
        env=cli_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_global_options_before_or_after_the_subcommand(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "seedapp.py").write_text(APP_MODULE.format(url=db_url))
    upsert = run(tmp_path, "-A", "seedapp:app", "flows", "upsert", "ping")
    assert upsert.returncode == 0, upsert.stderr
    assert "ping: compiled" in upsert.stdout
    before = run(tmp_path, "--database-url", db_url, "--json", "flows", "list")
    after = run(tmp_path, "flows", "list", "--database-url", db_url, "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert [f["flow_slug"] for f in json.loads(before.stdout)] == ["ping"]
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_db_status_json(db_url: str, tmp_path: Path) -> None:
    result = run(tmp_path, "db", "status", "--json", "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    states = json.loads(result.stdout)
    assert states and all(not s["pending"] and s["applied_at"] for s in states)
    assert {"version", "name", "applied_at", "how", "pending"} == set(states[0])


def test_a_wait_that_times_out_says_so_and_how_to_go_on(db_url: str, tmp_path: Path) -> None:
    PgFlow(db_url).upsert_flow("idle", steps=[{"slug": "only"}])
    started = run(
        tmp_path,
        "--database-url",
        db_url,
        "runs",
        "start",
        "idle",
        "{}",
        "--wait",
        "--timeout",
        "1.5",
    )
    assert started.returncode == EXIT_TIMEOUT
    run_id = started.stderr.split("run ", 1)[1].split()[0]
    assert "did not finish within 1.5 s" in started.stderr
    assert f"'pgflow-kombu runs wait {run_id}'" in started.stderr
    # With no terminal a long wait is not silent: a progress line every few seconds.
    waited = run(tmp_path, "--database-url", db_url, "runs", "wait", run_id, "--timeout", "7")
    assert waited.returncode == EXIT_TIMEOUT
    assert f"waiting for run {run_id} (" in waited.stderr and "only:" in waited.stderr
    assert "did not finish within 7 s" in waited.stderr


def test_runs_show_of_a_retrying_step_gives_its_last_error(db_url: str, tmp_path: Path) -> None:
    PgFlow(db_url).upsert_flow("retrying", max_attempts=3, base_delay=60, steps=[{"slug": "only"}])
    started = run(tmp_path, "--database-url", db_url, "runs", "start", "retrying", "{}")
    run_id = started.stdout.strip()

    def full(step: str, task_input: object) -> object:
        raise OSError("disk full")

    assert drain(db_url, "retrying", full) == 1  # then it waits out base_delay
    shown = run(tmp_path, "--database-url", db_url, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "retrying (attempt 1 failed): disk full" in shown.stdout


def test_worker_log_format_json_makes_every_stderr_line_json(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "seedapp.py").write_text(APP_MODULE.format(url=db_url))
    env = cli_environment(tmp_path)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [*WORKER, "--log-format", "json", "--heartbeat-interval", "0.2"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not worker_rows(db_url) and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r[0] for r in worker_rows(db_url)] == ["ping"], log.read_text()
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
        worker.wait(60)
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    banner = next(e for e in entries if e.get("event") == "worker_banner")
    assert banner["message"].startswith("pgflow-kombu worker ")
    assert banner["app"] == "seedapp:app" and banner["flows"].startswith("ping")
    assert worker.returncode == 0
