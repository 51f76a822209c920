"""The dashboard served by uvicorn in a thread (browser tests and the benchmark), and a seed of
many runs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from pgflow_kombu.dashboard import create_app
from pgflow_kombu.db.connect import connect
from tests.support.sql import test_query


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(url: str, **options: Any) -> Iterator[str]:
    """The dashboard of ``url`` on 127.0.0.1 at a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(url, basic_auth=None, **options),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def seed_runs(url: str, flow_slug: str, n: int, *, spread: float = 7200.0) -> None:
    with connect(url) as conn:
        conn.execute(
            test_query("dashboard_seed_runs"), {"flow_slug": flow_slug, "n": n, "spread": spread}
        )
        conn.execute(test_query("dashboard_analyze"))  # as autovacuum would have by then
