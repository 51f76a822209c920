"""``pgflow-kombu dashboard`` in its own process: serves on 127.0.0.1 by default, under
``--base-path``, refuses actions with ``--read-only``, stops on SIGTERM, and leaves a schema that
is not up to date alone (saying what to run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.dashboard import free_port

pytestmark = pytest.mark.timeout(90)


@contextmanager
def dashboard(db_url: str, *args: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgflow_kombu", "--database-url", db_url, "dashboard",
         "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGFLOW_DASHBOARD_USER": "", "PGFLOW_DASHBOARD_PASSWORD": ""},
    )  # fmt: skip
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(url: str, data: bytes | None = None) -> tuple[int, str]:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, data=data, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_serves_on_localhost_and_stops_on_sigterm(db_url: str) -> None:
    with dashboard(db_url) as (port, proc):
        status, body = get(f"http://127.0.0.1:{port}/flows")
        assert status == 200 and "<h1>Flows</h1>" in body
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the usual exit by SIGTERM.
        assert proc.wait(15) in (0, -signal.SIGTERM)
        assert proc.stderr is not None
        assert f"dashboard on http://127.0.0.1:{port}/" in proc.stderr.read()


def test_base_path_and_read_only(db_url: str) -> None:
    with dashboard(db_url, "--base-path", "/ops/pgflow/", "--read-only") as (port, _):
        status, body = get(f"http://127.0.0.1:{port}/ops/pgflow/")
        assert status == 200 and "read-only" in body
        assert 'href="/ops/pgflow/flows"' in body
        assert get(f"http://127.0.0.1:{port}/")[0] == 404
        refused, _ = get(f"http://127.0.0.1:{port}/ops/pgflow/flows/x/start", data=b"input=1")
        assert refused == 403


def test_refuses_a_database_whose_schema_is_not_up_to_date(empty_db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgflow_kombu", "--database-url", empty_db_url, "dashboard",
         "--port", str(free_port())],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "run 'pgflow-kombu db upgrade' first" in done.stderr
