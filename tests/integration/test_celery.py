"""A real Celery worker (prefork pool, on kombu's event loop) with ``broker_url="pgflow://..."``.

The result backend is Celery's database backend (SQLAlchemy) on the same PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import chain, chord, group
from celery.exceptions import TaskRevokedError

from tests.celery_app.app import add, app, flaky, mark, recorded, reject_once, slow, tsum
from tests.celery_app.urls import broker_url
from tests.celery_app.worker import ROOT, Worker
from tests.support.databases import clone_database, drop

pytestmark = pytest.mark.celery

TRANSPORT_OPTIONS = {"visibility_timeout": 3, "polling_interval": 0.5}


def backend_url(db_url: str) -> str:
    parts = urlsplit(db_url)
    return "db+" + urlunsplit(parts._replace(scheme="postgresql+psycopg"))


@pytest.fixture(scope="module")
def celery_env(
    pg_admin_url: str, schema_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    db_url = clone_database(pg_admin_url, schema_template, prefix="c")
    log_dir = tmp_path_factory.mktemp("celery")
    env = {
        "CELERY_TEST_BROKER": broker_url(db_url),
        "CELERY_TEST_BACKEND": backend_url(db_url),
        "CELERY_TEST_LOG": str(log_dir / "events.jsonl"),
        "CELERY_TEST_TRANSPORT_OPTIONS": json.dumps(TRANSPORT_OPTIONS),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    app.conf.update(
        broker_url=env["CELERY_TEST_BROKER"],
        result_backend=env["CELERY_TEST_BACKEND"],
        broker_transport_options=TRANSPORT_OPTIONS,
    )
    try:
        yield {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    finally:
        app.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        drop(pg_admin_url, db_url)


@pytest.fixture(scope="module")
def log_dir(celery_env: dict[str, str]) -> Path:
    return Path(celery_env["CELERY_TEST_LOG"]).parent


@pytest.fixture(scope="module")
def worker(celery_env: dict[str, str], log_dir: Path) -> Iterator[Worker]:
    with Worker("main", celery_env, log_dir).start() as w:
        yield w


def test_plain_task(worker: Worker) -> None:
    assert add.delay(2, 3).get(timeout=20) == 5


def test_worker_consumes_on_the_event_loop(worker: Worker) -> None:
    ready = [e for e in recorded("worker_ready") if e["hostname"] == worker.hostname]
    assert ready
    assert ready[-1]["event_loop"] is True


def test_countdown_and_eta_run_when_due(worker: Worker) -> None:
    sent = time.time()
    by_countdown = mark.apply_async(("countdown",), countdown=1.5)
    by_eta = mark.apply_async(("eta",), eta=datetime.now(timezone.utc) + timedelta(seconds=1.5))
    assert by_countdown.get(timeout=20) == "countdown"
    assert by_eta.get(timeout=20) == "eta"
    runs = {e["key"]: e["at"] for e in recorded("mark") if e["key"] in ("countdown", "eta")}
    assert runs["countdown"] >= sent + 1.5
    assert runs["eta"] >= sent + 1.5


def test_eta_longer_than_the_visibility_timeout_runs_once(worker: Worker) -> None:
    # visibility_timeout is 3 s: the worker holds this message past it and keeps it hidden.
    result = mark.apply_async(("held",), countdown=5)
    assert result.get(timeout=30) == "held"
    time.sleep(1.5)
    assert [e["key"] for e in recorded("mark")].count("held") == 1


def test_retries(worker: Worker) -> None:
    assert flaky.delay("flaky", 2).get(timeout=20) == 3
    attempts = [e["attempt"] for e in recorded("flaky") if e["key"] == "flaky"]
    assert attempts == [1, 2, 3]


def test_reject_with_requeue_comes_back_redelivered(worker: Worker) -> None:
    assert reject_once.delay("rq").get(timeout=20) == "redelivered"
    seen = [e["redelivered"] for e in recorded("reject_once") if e["key"] == "rq"]
    assert seen == [False, True]


def test_revoke_is_broadcast_to_the_worker(worker: Worker) -> None:
    result = mark.apply_async(("revoked",), countdown=3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the worker holds it (scheduled, waiting for eta)
        scheduled = app.control.inspect(destination=[worker.hostname], timeout=1).scheduled()
        if scheduled and scheduled.get(worker.hostname):
            break
    app.control.revoke(result.id)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    assert "revoked" not in [e["key"] for e in recorded("mark")]


def test_celery_inspect_ping(worker: Worker, celery_env: dict[str, str]) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app.app",
            "inspect",
            "ping",
            "--timeout",
            "2",
        ],
        cwd=ROOT,
        env=celery_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "pong" in completed.stdout
    assert worker.hostname in completed.stdout


def test_chain(worker: Worker) -> None:
    assert chain(add.s(1, 2), add.s(3), add.s(4))().get(timeout=30) == 10


def test_group(worker: Worker) -> None:
    assert group(add.s(i, i) for i in range(6))().get(timeout=30) == [0, 2, 4, 6, 8, 10]


def test_chord(worker: Worker) -> None:
    assert chord(add.s(i, i) for i in range(5))(tsum.s()).get(timeout=40) == 20


def test_worker_restarts_lose_no_acks_late_task(
    worker: Worker, celery_env: dict[str, str], log_dir: Path
) -> None:
    keys = [f"late-{i}" for i in range(6)]
    results = [slow.apply_async((key, 1.0), queue="restart") for key in keys]
    with Worker("restart1", celery_env, log_dir, queues="restart") as first:
        first.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            e["key"] in keys for e in recorded("slow_start")
        ):
            time.sleep(0.1)
        first.stop(sig=signal.SIGKILL)  # mid-task, nothing acknowledged or restored
    with Worker("restart2", celery_env, log_dir, queues="restart") as second:
        second.start()
        assert [r.get(timeout=60) for r in results] == keys
    done = {e["key"] for e in recorded("slow_done")}
    assert set(keys) <= done
