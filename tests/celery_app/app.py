"""The Celery app the worker tests run (``celery -A tests.celery_app.app worker``).

Configured from the environment by the tests: ``CELERY_TEST_BROKER`` (a ``pgflow://`` URL),
``CELERY_TEST_BACKEND`` (``db+postgresql+psycopg://...``), ``CELERY_TEST_LOG`` (a file every task
appends a JSON line to, so that tests can see what ran, how often, in which process) and
``CELERY_TEST_TRANSPORT_OPTIONS`` (JSON).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task, signals
from celery.exceptions import Reject

import pgflow_kombu  # noqa: F401 - registers the pgflow:// transport

app = Celery(
    "tests.celery_app",
    broker=os.environ.get("CELERY_TEST_BROKER", "pgflow://postgres@localhost/postgres"),
    backend=os.environ.get("CELERY_TEST_BACKEND"),
)
app.conf.update(
    broker_transport_options=json.loads(os.environ.get("CELERY_TEST_TRANSPORT_OPTIONS") or "{}"),
    broker_connection_retry_on_startup=True,
    result_extended=False,
    task_default_retry_delay=0,
    worker_prefetch_multiplier=2,
    worker_hijack_root_logger=False,
    database_table_names={"task": "celery_taskmeta", "group": "celery_groupmeta"},
)


def record(event: str, **fields: Any) -> None:
    path = os.environ.get("CELERY_TEST_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **fields})
    with Path(path).open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def recorded(event: str) -> list[dict[str, Any]]:
    path = os.environ.get("CELERY_TEST_LOG")
    if not path or not Path(path).exists():
        return []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


@signals.worker_ready.connect
def on_worker_ready(sender: Any, **kwargs: Any) -> None:
    # Whether the worker consumes on kombu's event loop (our transport registered with its Hub).
    transport = sender.connection.transport
    record("worker_ready", hostname=sender.hostname, event_loop=transport._hub is not None)


@app.task
def add(x: int, y: int) -> int:
    record("add", x=x, y=y)
    return x + y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def mark(key: str) -> str:
    record("mark", key=key)
    return key


@app.task(bind=True, max_retries=5)
def flaky(self: Task, key: str, failures: int) -> int:
    attempt = self.request.retries + 1
    record("flaky", key=key, attempt=attempt)
    if attempt <= failures:
        raise self.retry(countdown=0.2)
    return int(attempt)


@app.task(bind=True, acks_late=True)
def reject_once(self: Task, key: str) -> str:
    redelivered = bool(self.request.delivery_info.get("redelivered"))
    record("reject_once", key=key, redelivered=redelivered)
    if not redelivered:
        raise Reject("first delivery: back to the queue", requeue=True)
    return "redelivered"


@app.task(acks_late=True)
def slow(key: str, seconds: float) -> str:
    record("slow_start", key=key)
    time.sleep(seconds)
    record("slow_done", key=key)
    return key
