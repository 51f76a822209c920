"""start_flow(idempotency_key=...): one run per key and flow, also under concurrent starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from pgflow_kombu import PgFlow
from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import FlowInputError
from tests.support.sql import test_query


@pytest.fixture
def app(db_url: str) -> Iterator[PgFlow]:
    application = PgFlow(db_url)

    @application.task
    def charge(order: int) -> int:
        return order

    @application.task
    def refund(order: int) -> int:
        return order

    yield application
    application.close()


def count(db_url: str, name: str, **params: Any) -> int:
    with connect(db_url) as conn:
        row = conn.execute(test_query(name), params).fetchone()
    assert row is not None
    return int(row[0])


def test_a_second_start_with_the_key_returns_the_first_run(app: PgFlow, db_url: str) -> None:
    charge = app.get_flow("charge")
    first = app.start_flow(charge, {"order": 1}, idempotency_key="order-1")
    again = app.start_flow(charge, {"order": 1}, idempotency_key="order-1")
    other = app.start_flow(charge, {"order": 2}, idempotency_key="order-2")
    assert again.run_id == first.run_id
    assert other.run_id != first.run_id
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 2
    # The key is per flow: another flow may use it.
    refund = app.start_flow("refund", {"order": 1}, idempotency_key="order-1")
    assert refund.run_id != first.run_id


def test_every_way_to_start_takes_a_key(app: PgFlow, db_url: str) -> None:
    task: Any = app._tasks["charge"]
    a = task.apply_async(kwargs={"order": 5}, idempotency_key="k")
    b = task.apply_async(kwargs={"order": 5}, countdown=30, idempotency_key="k")
    c = app.get_flow("charge").start({"order": 5}, idempotency_key="k")
    d = app.client.start_flow("charge", {"order": 5}, idempotency_key="k")
    assert a.run_id == b.run_id == c.run_id == d
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 1


@pytest.mark.parametrize("starters", [2, 8])
def test_concurrent_starts_with_one_key_give_one_run(
    app: PgFlow, db_url: str, starters: int
) -> None:
    app.ensure_flow(app.get_flow("charge"))
    clients = [Client(db_url) for _ in range(starters)]
    for client in clients:  # connections open before the barrier: the starts really race
        client.flow_exists("charge")
    barrier = threading.Barrier(starters)
    results: list[UUID] = []
    errors: list[BaseException] = []

    def start(client: Client) -> None:
        try:
            barrier.wait(10)
            results.append(client.start_flow("charge", {"order": 9}, idempotency_key="race"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for client in clients:
        client.close()
    assert not errors
    assert len(results) == starters and len(set(results)) == 1
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 1
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == 1


def test_a_start_waits_for_an_open_transaction_holding_the_key(app: PgFlow, db_url: str) -> None:
    app.ensure_flow(app.get_flow("charge"))
    outcome: dict[str, UUID] = {}
    with connect(db_url, autocommit=False) as conn:
        first = app.client.start_flow("charge", {"order": 3}, idempotency_key="tx", connection=conn)
        second = threading.Thread(
            target=lambda: outcome.update(
                run=app.client.start_flow("charge", {"order": 3}, idempotency_key="tx")
            )
        )
        second.start()
        second.join(1.0)
        assert second.is_alive()  # waiting on the uncommitted reservation
        conn.commit()
    second.join(10)
    assert outcome["run"] == first

    # A start whose transaction rolls back leaves the key free.
    with connect(db_url, autocommit=False) as conn:
        app.client.start_flow("charge", {"order": 4}, idempotency_key="rolled", connection=conn)
        conn.rollback()
    kept = app.client.start_flow("charge", {"order": 4}, idempotency_key="rolled")
    assert app.client.get_run(kept).input == {"order": 4}
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 2


def test_a_key_lives_as_long_as_its_run_or_its_ttl(app: PgFlow, db_url: str) -> None:
    first = app.start_flow("charge", {"order": 1}, idempotency_key="k").run_id
    with connect(db_url) as conn:
        conn.execute(test_query("delete_one_run"), {"run_id": first})
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == 0
    second = app.start_flow("charge", {"order": 1}, idempotency_key="k").run_id
    assert second != first

    short = app.start_flow("charge", {"order": 2}, idempotency_key="t", idempotency_ttl=3)
    assert app.start_flow("charge", {"order": 2}, idempotency_key="t").run_id == short.run_id
    time.sleep(3.5)
    after = app.start_flow("charge", {"order": 2}, idempotency_key="t")
    assert after.run_id != short.run_id
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3


@pytest.mark.parametrize(
    ("key", "ttl", "message"),
    [("", None, "non-empty string"), (None, 5, "needs an idempotency_key"), ("k", 0, "> 0")],
)
def test_bad_keys_are_refused(app: PgFlow, key: Any, ttl: Any, message: str) -> None:
    with pytest.raises(FlowInputError, match=message):
        app.start_flow("charge", {"order": 1}, idempotency_key=key, idempotency_ttl=ttl)


def test_cli_runs_start_with_a_key(app: PgFlow, db_url: str) -> None:
    from click.testing import CliRunner

    from pgflow_kombu.cli import cli

    app.ensure_flow(app.get_flow("charge"))
    runner = CliRunner()
    args = ["--database-url", db_url, "runs", "start", "charge", '{"order": 1}']
    first = runner.invoke(cli, [*args, "--idempotency-key", "cli-1"])
    second = runner.invoke(cli, [*args, "--idempotency-key", "cli-1"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert first.output.strip() == second.output.strip()
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 1
