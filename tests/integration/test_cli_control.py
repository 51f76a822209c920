"""``pgflow-kombu runs cancel|retry|delete|prune`` through click's runner."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner, Result

from pgflow_kombu import PgFlow
from pgflow_kombu.cli import EXIT_NOT_FOUND, EXIT_RUN_FAILED, cli
from pgflow_kombu.errors import RunNotFound, RunNotRetryable
from tests.support.sqlworker import drain


def invoke(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--database-url", db_url, *args], standalone_mode=True)


def start(db_url: str) -> str:
    result = invoke(db_url, "runs", "start", "greet", '{"name": "ada"}')
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_cancel_retry_delete_prune(db_url: str) -> None:
    PgFlow(db_url).upsert_flow(
        "greet", max_attempts=1, steps=[{"slug": "hello"}, {"slug": "shout", "deps": ["hello"]}]
    )
    run_id = start(db_url)

    cancelled = invoke(db_url, "runs", "cancel", run_id, "--reason", "not today")
    assert (cancelled.exit_code, cancelled.output) == (0, f"cancelled {run_id}\n")
    again = invoke(db_url, "runs", "cancel", run_id)
    assert "already finished" in again.output
    shown = json.loads(invoke(db_url, "runs", "show", run_id, "--json").output)
    assert shown["status"] == "cancelled"
    listed = json.loads(invoke(db_url, "runs", "list", "--status", "cancelled", "--json").output)
    assert [r["run_id"] for r in listed] == [run_id]
    assert invoke(db_url, "runs", "wait", run_id, "--timeout", "1").exit_code == EXIT_RUN_FAILED

    retried = invoke(db_url, "runs", "retry", run_id)
    assert (retried.exit_code, retried.output) == (
        0,
        f"retrying {run_id}: 1 task(s) queued again\n",
    )
    drain(db_url, "greet", lambda step, task_input: f"{step} ok")
    shown = json.loads(invoke(db_url, "runs", "show", run_id, "--json").output)
    assert shown["status"] == "completed"
    refused = invoke(db_url, "runs", "retry", run_id)
    assert isinstance(refused.exception, RunNotRetryable)
    assert "is completed, not failed" in str(refused.exception)

    pruned = invoke(db_url, "runs", "prune", "--older-than", "0s", "--json")
    assert pruned.exit_code == 0, pruned.output
    # The run's archived messages went with it; no other message was archived.
    assert json.loads(pruned.output) == {"runs": 1, "archived_messages": 0, "rate_buckets": 0}
    assert isinstance(invoke(db_url, "runs", "show", run_id).exception, RunNotFound)

    other = start(db_url)
    assert invoke(db_url, "runs", "delete", other, "--yes").output == f"deleted {other}\n"
    # The entry point maps the library's errors to exit codes.
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgflow_kombu",
            "--database-url",
            db_url,
            "runs",
            "delete",
            other,
            "--yes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == EXIT_NOT_FOUND, missing.stderr
    assert f"no run with id {other}" in missing.stderr
    bad = invoke(db_url, "runs", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.output
