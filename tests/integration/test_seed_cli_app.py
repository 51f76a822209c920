"""CLI commands given ``-A`` use the database the app was created with when no URL is set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pgflow_kombu import Client, PgFlow
from pgflow_kombu.cli import app_database_url
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows import Flow
from tests.support.sql import test_query

ROOT = Path(__file__).resolve().parents[2]

APP_MODULE = """
from pgflow_kombu import PgFlow

app = PgFlow({url!r})


@app.task
def ping(n: int) -> int:
    return n + 100
"""


def cli_environment(tmp_path: Path) -> dict[str, str]:
    """No database URL anywhere, and an embedded data directory whose parent is missing: a
    command that tried to start the embedded server would fail at once (and start none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLOW_")}
    env["PGFLOW_EMBEDDED_DIR"] = str(tmp_path / "missing" / "embedded")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgflow_kombu", *args]


def worker_rows(db_url: str) -> list[Any]:
    from pgflow_kombu.db.connect import connect

    with connect(db_url) as conn:
        return conn.execute(test_query("seeds_heartbeats")).fetchall()


def test_commands_given_an_app_use_its_database(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "seedapp.py").write_text(APP_MODULE.format(url=db_url))
    env = cli_environment(tmp_path)

    upsert = subprocess.run(
        cli("flows", "upsert", "ping", "-A", "seedapp:app"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upsert.returncode == 0, upsert.stdout + upsert.stderr
    assert "ping: compiled" in upsert.stdout
    assert "embedded" not in upsert.stderr

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            cli("worker", "-A", "seedapp:app", "--heartbeat-interval", "0.2"),
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Client(db_url)
    try:
        deadline = time.monotonic() + 120
        while not worker_rows(db_url) and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r[0] for r in worker_rows(db_url)] == ["ping"], log.read_text()
        run = client.wait(client.enqueue("ping", {"n": 1}), timeout=60)
        assert run.output == {"ping": 101}
    finally:
        client.close()
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
        worker.wait(60)
    output = log.read_text()
    assert worker.returncode == 0, output
    assert "embedded" not in output
    assert db_url.rsplit("/", 1)[1] in output  # the banner names the app's database
    assert not (tmp_path / "missing").exists()


def test_the_url_of_an_app_is_found_from_its_flows_and_tasks(db_url: str) -> None:
    app = PgFlow(db_url)

    @app.task
    def ping(n: int) -> int:
        return n

    assert app_database_url(app) == db_url
    assert app_database_url(ping) == db_url
    assert app_database_url([ping, app.flow("other")]) == db_url
    assert app_database_url(Flow("unbound")) is None
    elsewhere = PgFlow(db_url + "_elsewhere")
    with pytest.raises(ConfigurationError, match="different databases"):
        app_database_url([ping, elsewhere.flow("far")])


def test_an_app_without_a_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGFLOW_DATABASE_URL", raising=False)
    assert app_database_url(PgFlow()) is None
