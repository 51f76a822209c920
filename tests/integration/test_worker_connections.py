"""How many connections one worker process holds, by part: the number docs/worker.md states.

Counted on the server (pg_stat_activity, by application_name) once the worker has served jobs,
for two concurrencies: the count does not grow with concurrency (slots hold no connection).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import database_of
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.consumer import KombuSource
from tests.support.sql import test_query

# docs/worker.md, "Connections per worker": the same numbers, by message source.
COMMON = {"claims": 1, "reports": 2, "heartbeat": 1, "scheduler": 1}
EXPECTED = {
    "claim": {**COMMON, "listen": 1},
    "kombu": {
        **COMMON,
        "transport listener": 1,
        "transport reads, acks, declarations, sweeps": 3,
    },
}


def census(url: str) -> Counter[str]:
    roles: Counter[str] = Counter()
    with connect(url) as conn:
        rows = conn.execute(test_query("worker_connections"), {"dbname": database_of(url)})
        for app_name, last in rows:
            role = app_name.removeprefix("pgflow-kombu-")
            if role == "reporter":
                role = "reports"
            elif role == "worker":  # the transport's (kombu's pgflow:// connection)
                role = (
                    "transport listener"
                    if last.upper().startswith("LISTEN")
                    else "transport reads, acks, declarations, sweeps"
                )
            roles[role] += 1
    return roles


@pytest.mark.parametrize(("source", "concurrency"), [("claim", 1), ("claim", 8), ("kombu", 4)])
def test_connections_of_one_worker_process(db_url: str, source: str, concurrency: int) -> None:
    app = PgFlow(db_url)
    expected = Counter(EXPECTED[source])

    @app.task
    def noop(i: int) -> int:
        return i

    worker = Worker(
        app.flows,
        db_url,
        source=KombuSource(db_url) if source == "kombu" else None,
        concurrency=concurrency,
        heartbeat_interval=0.5,
    )
    worker.start()
    try:
        handles: list[Any] = [noop.delay(i) for i in range(3 * concurrency)]
        for handle in handles:
            handle.wait(timeout=30)
        # the transport sweeps for expired queues at its first drain and then every 5 s
        found = settled(db_url, expected)
        assert matches(found, expected), found
        assert sum(expected.values()) == {"claim": 6, "kombu": 9}[source]
    finally:
        worker.stop(10)
        app.close()
    # all of them are closed with the worker (a backend ends just after its client closed)
    assert settled(db_url, Counter()) == Counter()


def matches(found: Counter[str], expected: Counter[str]) -> bool:
    """``found`` is ``expected``, but for the reporter: its second connection opens only when a
    batch is reported while another is in flight, so 1 of the 2 is enough."""
    if not expected:
        return found == expected
    others = Counter({k: v for k, v in found.items() if k != "reports"})
    return others == expected - Counter(reports=expected["reports"]) and (
        1 <= found["reports"] <= expected["reports"]
    )


def settled(url: str, expected: Counter[str], timeout: float = 30.0) -> Counter[str]:
    """The census once it equals ``expected``, or the last one after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    found = census(url)
    while not matches(found, expected) and time.monotonic() < deadline:
        time.sleep(0.2)
        found = census(url)
    return found
