"""Worker subprocesses for the end-to-end tests: the real ``pgflow-kombu worker`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e_apps.basic:app"


class WorkerProcess:
    """``python -m pgflow_kombu worker -A <app> ...`` with its log in a temporary file."""

    def __init__(
        self,
        url: str,
        *args: str,
        app: str = APP,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ):
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the process
            "w+", prefix="pgflow-worker-", suffix=".log", delete=False
        )
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("PGFLOW_APP", None)
        self.command = [
            *prefix,  # e.g. ip netns exec NAME
            sys.executable,
            "-m",
            "pgflow_kombu",
            "--database-url",
            url,
            "worker",
            "-A",
            app,
            *args,
        ]
        self._final_log: str | None = None
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=environment,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return Path(self.log_file.name).read_text()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the worker log within {timeout} s:\n{self.log}")

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        self.wait_for("worker ready", timeout)
        return self

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker did not exit within {timeout} s:\n{self.log}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        self._final_log = self.log
        self.log_file.close()
        os.unlink(self.log_file.name)
