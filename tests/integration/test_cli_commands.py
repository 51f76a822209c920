"""The CLI's flows / runs / workers / health commands, through click's runner."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from pgflow_kombu import PgFlow
from pgflow_kombu.cli import EXIT_NOT_FOUND, EXIT_RUN_FAILED, EXIT_TIMEOUT, cli
from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query
from tests.support.sqlworker import drain


def invoke(db_url: str, *args: str) -> Result:
    runner = CliRunner()
    return runner.invoke(cli, ["--database-url", db_url, *args], standalone_mode=True)


def add_flow(db_url: str) -> None:
    PgFlow(db_url).upsert_flow(
        "greet", max_attempts=1, steps=[{"slug": "hello"}, {"slug": "shout", "deps": ["hello"]}]
    )


def test_flows_list_show_and_delete(db_url: str) -> None:
    add_flow(db_url)
    listed = invoke(db_url, "flows", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [f["flow_slug"] for f in json.loads(listed.output)] == ["greet"]
    shown = invoke(db_url, "flows", "show", "greet")
    assert "shout" in shown.output and "hello" in shown.output
    shape = json.loads(invoke(db_url, "flows", "show", "greet", "--json").output)
    assert shape["steps"][1] == {
        "slug": "shout",
        "deps": ["hello"],
        "step_type": "single",
        "options": {},
    }
    deleted = invoke(db_url, "flows", "delete", "greet", "--yes")
    assert deleted.exit_code == 0
    assert json.loads(invoke(db_url, "flows", "list", "--json").output) == []


def test_flows_upsert_from_a_json_file(db_url: str, tmp_path: Any) -> None:
    path = tmp_path / "shape.json"
    path.write_text(json.dumps({"options": {"max_attempts": 2}, "steps": [{"slug": "only"}]}))
    result = invoke(db_url, "flows", "upsert", "from_file", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert "from_file: compiled" in result.output


def test_runs_start_show_list(db_url: str) -> None:
    add_flow(db_url)
    started = invoke(db_url, "runs", "start", "greet", '{"name": "ada"}', "--json")
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.output)["run_id"]
    drain(db_url, "greet", lambda step, task_input: f"{step} ok")
    shown = json.loads(invoke(db_url, "runs", "show", run_id, "--json").output)
    assert shown["status"] == "completed"
    assert shown["output"] == {"shout": "shout ok"}
    table = invoke(db_url, "runs", "show", run_id).output
    assert "hello" in table and "1/1" in table
    listed = json.loads(invoke(db_url, "runs", "list", "--flow", "greet", "--json").output)
    assert [r["run_id"] for r in listed] == [run_id]


def test_runs_bad_input_is_a_usage_error(db_url: str) -> None:
    add_flow(db_url)
    result = invoke(db_url, "runs", "start", "greet", "{not json")
    assert result.exit_code == 2
    assert "not JSON" in result.output


def test_workers_list_and_health(db_url: str) -> None:
    assert json.loads(invoke(db_url, "workers", "list", "--json").output) == []
    health = json.loads(invoke(db_url, "health", "--json").output)
    assert health["status"] == "ok"


def test_exit_codes_of_the_entry_point(db_url: str) -> None:
    import subprocess
    import sys

    add_flow(db_url)

    def cli_exit(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "pgflow_kombu", "--database-url", db_url, *args],
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode

    assert cli_exit("runs", "show", "00000000-0000-0000-0000-000000000000") == EXIT_NOT_FOUND
    assert cli_exit("runs", "start", "greet", "{}", "--wait", "--timeout", "0.5") == EXIT_TIMEOUT
    run_id = json.loads(invoke(db_url, "runs", "start", "greet", "{}", "--json").output)["run_id"]

    def boom(step: str, task_input: Any) -> Any:
        raise RuntimeError("nope")

    drain(db_url, "greet", boom)
    assert cli_exit("runs", "wait", run_id, "--timeout", "5") == EXIT_RUN_FAILED
    assert cli_exit("flows", "show", "missing") == EXIT_NOT_FOUND


def test_flows_upsert_stores_the_app_flow_s_limits_and_a_file_without_them_removes_them(
    db_url: str, tmp_path: Any
) -> None:
    def stored() -> list[tuple[Any, ...]]:
        with connect(db_url) as conn:
            return conn.execute(test_query("limits_stored"), {"flow_slug": "solo"}).fetchall()

    result = invoke(db_url, "flows", "upsert", "solo", "-A", "tests.e2e_apps.limits:app")
    assert result.exit_code == 0, result.output
    assert stored() == [("", 1, None, None, False, None, None, False)]
    path = tmp_path / "solo.json"
    path.write_text(json.dumps({"options": {"max_attempts": 3}, "steps": [{"slug": "solo"}]}))
    result = invoke(db_url, "flows", "upsert", "solo", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert stored() == []
    path.write_text(
        json.dumps(
            {
                "options": {"rate_limit": "5/m", "concurrency_key": "customer"},
                "steps": [{"slug": "solo", "max_concurrency": 2}],
            }
        )
    )
    result = invoke(db_url, "flows", "upsert", "solo", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert stored() == [
        ("", None, 5, 60.0, True, "customer", None, False),
        ("solo", 2, None, None, False, None, None, False),
    ]
