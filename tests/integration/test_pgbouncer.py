"""Through a real PgBouncer in transaction pooling mode: poll-only mode (``PGFLOW_POLL_ONLY``).

A transaction pooler lends a server connection per transaction, so session state does not
survive between two transactions of one client: a LISTEN hears nothing, a prepared statement
is missing on the next server connection, and PgBouncer refuses the startup ``options`` that
carry our per-session settings. The first tests show each of these failing without the mode;
the last runs a worker, jobs, a two-step flow, ``wait()`` and a run's events through the pooler
with the mode on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect, connection_params
from pgflow_kombu.db.urls import database_of, to_libpq
from pgflow_kombu.errors import ConfigurationError, ConnectionFailed
from pgflow_kombu.settings import Liveness
from pgflow_kombu.worker import PgmqSource, Worker
from pgflow_kombu.worker.retention import Retention
from tests.support.pgbouncer import PgBouncer, unavailable_reason
from tests.support.sql import test_query

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _bouncer(pg_admin_url: str, **options: Any) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(pg_admin_url, **options)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="module")
def bouncer(pg_admin_url: str) -> Iterator[PgBouncer]:
    yield from _bouncer(pg_admin_url)


@pytest.fixture(scope="module")
def lenient_bouncer(pg_admin_url: str) -> Iterator[PgBouncer]:
    """A pooler told to drop the startup ``options`` (the usual workaround), so that what
    connects anyway can show what else goes wrong."""
    yield from _bouncer(pg_admin_url, ignore_startup_parameters="options")


def _open(bouncer: PgBouncer, db_url: str, **params: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(to_libpq(bouncer.url_for(db_url)), autocommit=True, **params)


def _interleave(a: psycopg.Connection[Any], b: psycopg.Connection[Any]) -> None:
    """Run one statement on ``a`` often enough for psycopg to prepare it, then again while ``b``
    holds (in a transaction) the server connection ``a`` last used: ``a`` gets another one."""
    for i in range(8):
        a.execute(test_query("plus_one"), {"n": i})
    with b.transaction():
        b.execute(test_query("select_one"))  # the most recently used server connection: a's
        a.execute(test_query("plus_one"), {"n": 99})


# -- without the mode --------------------------------------------------------------------------


def test_a_transaction_pooler_refuses_our_startup_options(
    bouncer: PgBouncer, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGFLOW_POLL_ONLY", raising=False)
    with pytest.raises(ConnectionFailed, match="unsupported startup parameter: options"):
        connect(bouncer.url_for(db_url))
    app = PgFlow(bouncer.url_for(db_url))

    @app.task
    def noop() -> None: ...

    worker = Worker(app.flows, bouncer.url_for(db_url), scheduler=False)
    with pytest.raises(ConnectionFailed, match="unsupported startup parameter: options"):
        worker.start()


def test_prepared_statements_break_across_server_connections(
    lenient_bouncer: PgBouncer, db_url: str
) -> None:
    with (
        _open(lenient_bouncer, db_url) as a,
        _open(lenient_bouncer, db_url) as b,
        pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"),
    ):
        _interleave(a, b)


def test_a_listen_hears_nothing_through_a_transaction_pooler(
    lenient_bouncer: PgBouncer, db_url: str
) -> None:
    with _open(lenient_bouncer, db_url) as a, _open(lenient_bouncer, db_url) as b:
        a.execute(test_query("listen_test_channel"))
        b.execute(test_query("notify_test_channel"))
        assert [n.payload for n in a.notifies(timeout=1.0)] == []


# -- with the mode -----------------------------------------------------------------------------


def test_poll_only_connections_carry_no_session_state(
    bouncer: PgBouncer, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGFLOW_POLL_ONLY", "1")
    params = connection_params(bouncer.url_for(db_url))
    assert "options" not in params and params["prepare_threshold"] is None
    # connects through the strict pooler, and the interleaving that broke above works
    with connect(bouncer.url_for(db_url)) as a, connect(bouncer.url_for(db_url)) as b:
        _interleave(a, b)
        assert a.execute(test_query("plus_one"), {"n": 1}).fetchone() == (2,)
    # the same URL without the mode still gets the session settings
    assert "options" in connection_params(db_url, settings=Liveness(poll_only=False))


def test_poll_only_refuses_a_worker_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFLOW_POLL_ONLY", "true")
    with pytest.raises(ConfigurationError, match="runs prune"):
        Retention("postgresql://postgres@127.0.0.1/x", timedelta(days=1))


@pytest.mark.parametrize("source", ["kombu", "pgmq"])
def test_worker_jobs_flow_and_wait_through_pgbouncer_in_poll_only_mode(
    bouncer: PgBouncer,
    db_url: str,
    pg_admin_url: str,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    monkeypatch.setenv("PGFLOW_POLL_ONLY", "1")
    pooled = bouncer.url_for(db_url)
    log_before = len(bouncer.log())
    app = PgFlow(pooled)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    pair = app.flow("pair")

    @pair.step
    def first(run: int) -> int:
        return run * 10

    @pair.step
    def second(first: int) -> int:
        return first + 1

    worker = Worker(
        app.flows,
        pooled,
        concurrency=4,
        heartbeat_interval=0.5,
        stalled_after=5.0,
        source=PgmqSource(pooled, poll_interval=0.1) if source == "pgmq" else None,
    )
    finished = threading.Event()
    try:
        worker.start()
        jobs = [add.delay(i, i) for i in range(20)]
        runs = [app.start(pair, i) for i in range(3)]
        assert [job.wait(timeout=30).output for job in jobs] == [{"add": 2 * i} for i in range(20)]
        done = [app.wait(run.run_id, timeout=30) for run in runs]
        assert [run.output for run in done] == [{"second": i * 10 + 1} for i in range(3)]
        # a run's live events end with the run's own end, without LISTEN
        later = app.start(pair, 7)
        kinds = [event.event_type for event in app.events(later.run_id, timeout=30)]
        assert kinds[-1] == "run:completed"
        another = app.start(pair, 8)
        assert asyncio.run(_async_events(app, another.run_id))[-1] == "run:completed"
        finished.set()
    finally:
        code = worker.stop(10)
        app.close()
    assert finished.is_set() and code == 0
    assert worker.stats.completed == 20 + 3 * 2 + 2 * 2
    # No server connection of the database was ever told to LISTEN, and the pooler saw no
    # protocol error (a missing prepared statement, a refused parameter).
    with connect(pg_admin_url) as admin:
        listening = admin.execute(
            test_query("backends_told_to_listen"), {"dbname": database_of(db_url)}
        ).fetchone()
    assert listening == (0,)
    log = bouncer.log()[log_before:]
    assert "does not exist" not in log and "unsupported startup parameter" not in log


async def _async_events(app: PgFlow, run_id: Any) -> list[str]:
    return [event.event_type async for event in app.aevents(run_id, timeout=30)]
