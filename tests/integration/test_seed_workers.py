"""``app.start_worker(flow)`` / ``app.stop_worker(flow)``: one worker per flow, as in the seeds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from pgflow_kombu import PgFlow, WorkerNotFound
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import ConnectionFailed, FlowMismatch
from pgflow_kombu.worker import ExitCode, Worker
from tests.support.sql import test_query

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "stalled_after": 5.0, "concurrency": 1}


@pytest.fixture
def app(db_url: str) -> Iterator[PgFlow]:
    application = PgFlow(db_url)

    @application.task
    def alpha(n: int) -> int:
        return n + 1

    @application.task
    def beta(n: int) -> int:
        return n * 2

    @application.task
    def gamma(n: int) -> int:
        return -n

    yield application
    application.close()


def heartbeat_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "pgflow-heartbeat")


def heartbeats(db_url: str) -> dict[str, list[datetime]]:
    """Last heartbeat of each pgflow.workers row, by queue."""
    found: dict[str, list[datetime]] = {}
    with connect(db_url) as conn:
        for queue, _worker_id, beat in conn.execute(test_query("seeds_heartbeats")):
            found.setdefault(queue, []).append(beat)
    return found


def completes(app: PgFlow, slug: str, n: int) -> Any:
    return app.enqueue(slug, {"n": n}).get(timeout=30)


def test_a_flow_worker_starts_once_and_stops_alone(app: PgFlow, db_url: str) -> None:
    threads_before = heartbeat_threads()
    alpha = app.start_worker("alpha", **FAST)
    assert app.start_worker("alpha", **FAST) is alpha  # a no-op returning the running worker
    assert app.start_worker(app.get_flow("alpha")) is alpha
    beta = app.start_worker("beta", **FAST)
    assert beta is not alpha
    assert alpha.flows.keys() == {"alpha"} and beta.flows.keys() == {"beta"}
    assert app.workers == {"alpha": alpha, "beta": beta}
    assert {q: len(b) for q, b in heartbeats(db_url).items()} == {"alpha": 1, "beta": 1}
    assert heartbeat_threads() == threads_before + 2
    assert completes(app, "alpha", 1) == {"alpha": 2}
    assert completes(app, "beta", 2) == {"beta": 4}

    assert app.stop_worker("alpha") is True
    assert alpha.exit_code == ExitCode.OK
    assert app.workers == {"beta": beta}
    assert heartbeat_threads() == threads_before + 1
    first = heartbeats(db_url)
    time.sleep(1.0)  # five heartbeat intervals
    second = heartbeats(db_url)
    assert second["alpha"] == first["alpha"]  # the stopped worker's row beats no more
    assert second["beta"][0] > first["beta"][0]  # the other one still does
    assert completes(app, "beta", 5) == {"beta": 10}
    waiting = app.enqueue("alpha", {"n": 7})
    time.sleep(0.5)
    assert waiting.status == "started"  # nobody serves alpha now

    with pytest.raises(WorkerNotFound, match="'alpha'"):
        app.stop_worker("alpha")
    with pytest.raises(WorkerNotFound, match="'gamma'"):
        app.stop_worker(app.get_flow("gamma"))
    with pytest.raises(TypeError, match="timeout= is a keyword"):
        app.stop_worker(10)  # type: ignore[arg-type]
    assert app.workers == {"beta": beta}

    again = app.start_worker("alpha", **FAST)
    assert again is not alpha
    assert waiting.get(timeout=30) == {"alpha": 8}
    assert app.stop_worker(timeout=10) is True
    assert again.exit_code == beta.exit_code == ExitCode.OK
    assert app.workers == {}
    assert heartbeat_threads() == threads_before
    assert app.stop_worker() is False


def test_start_worker_without_a_flow_serves_every_flow_each_with_its_worker(
    app: PgFlow, db_url: str
) -> None:
    beta = app.start_worker("beta", **FAST)
    every = app.start_worker(**FAST)
    assert every.keys() == {"alpha", "beta", "gamma"}
    assert every["beta"] is beta  # kept, not started twice
    assert len({id(w) for w in every.values()}) == 3
    assert app.start_worker(**FAST) == every
    assert [completes(app, s, 3) for s in ("alpha", "beta", "gamma")] == [
        {"alpha": 4},
        {"beta": 6},
        {"gamma": -3},
    ]
    app.stop_worker("gamma")
    assert app.workers.keys() == {"alpha", "beta"}
    assert {q: len(b) for q, b in heartbeats(db_url).items()} == {"alpha": 1, "beta": 1, "gamma": 1}
    some = app.start_worker(flows=["gamma", "alpha"], **FAST)
    assert some.keys() == {"gamma", "alpha"} and some["alpha"] is every["alpha"]
    app.close()
    assert app.workers == {}
    assert all(w.exit_code == ExitCode.OK for w in [*every.values(), some["gamma"]])


def test_a_flow_that_cannot_be_served_starts_no_worker(app: PgFlow, db_url: str) -> None:
    other = PgFlow(db_url)
    other.upsert_flow("gamma", steps=[{"slug": "different"}])
    other.close()
    with pytest.raises(FlowMismatch, match="'gamma'"):
        app.start_worker(**FAST)
    assert app.workers == {}
    assert heartbeats(db_url) == {}


def test_when_one_flow_fails_to_start_the_workers_started_with_it_are_stopped(
    app: PgFlow, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads_before = heartbeat_threads()
    beta = app.start_worker("beta", **FAST)
    real_start = Worker.start

    def start(worker: Worker) -> None:
        if "gamma" in worker.flows:
            raise ConnectionFailed("the database went away")
        real_start(worker)

    monkeypatch.setattr(Worker, "start", start)
    with pytest.raises(ConnectionFailed):
        app.start_worker(**FAST)  # alpha starts, gamma fails: alpha is stopped again
    assert app.workers == {"beta": beta}  # the one running before is left alone
    assert heartbeat_threads() == threads_before + 1
    assert {q for q, _w, _b in worker_rows(db_url)} == {"alpha", "beta"}
    assert completes(app, "beta", 1) == {"beta": 2}
    assert app.stop_worker("beta") is True
    assert heartbeat_threads() == threads_before


def worker_rows(db_url: str) -> list[Any]:
    with connect(db_url) as conn:
        return conn.execute(test_query("seeds_heartbeats")).fetchall()
