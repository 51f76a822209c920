"""Running a real Celery worker (``celery -A tests.celery_app.app worker``) in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from tests.celery_app.app import app

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        queues: str = "celery",
        concurrency: int = 2,
        control: Celery | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.queues = queues
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.control = control or app  # the app whose broker the readiness ping goes through
        self.prefix = list(prefix)  # e.g. ip netns exec NAME

    @property
    def hostname(self) -> str:
        return f"{self.name}@pgflow-kombu-tests"

    def start(self, *, timeout: float = 30.0) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.celery_app.app",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    str(self.concurrency),
                    "-l",
                    "INFO",
                    "-n",
                    self.hostname,
                    "-Q",
                    self.queues,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()}")
            replies = self.control.control.inspect(destination=[self.hostname], timeout=1.0).ping()
            if replies and self.hostname in replies:
                return
        raise RuntimeError(f"worker {self.name} did not answer a ping in {timeout}s:\n{self.log()}")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            if sig == signal.SIGKILL:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.send_signal(sig)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        finally:
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
