"""start_flow(idempotency_key=...) and start_many(idempotency_keys=...): one run per key and
flow, also under concurrent starts."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgflow_kombu import PgFlow
from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import FlowInputError, FlowNotFound
from tests.support.sql import test_query
from tests.support.sqlworker import queue_messages


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


# -- start_many(idempotency_keys=...) -----------------------------------------------------------


def message_runs(db_url: str, queue: str) -> list[str]:
    """The run id of every message in the flow's queue, visible or not."""
    return [m[1]["run_id"] for m in queue_messages(db_url, queue)]


def test_a_batch_with_new_keys_starts_one_run_per_key(app: PgFlow, db_url: str) -> None:
    charge = app.get_flow("charge")
    handles = app.start_many(
        charge, [{"order": i} for i in range(4)], idempotency_keys=["a", "b", None, "c"]
    )
    ids = [h.run_id for h in handles]
    assert len(set(ids)) == 4
    assert [app.get_run(i).input for i in ids] == [{"order": i} for i in range(4)]
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 4
    assert sorted(message_runs(db_url, "charge")) == sorted(str(i) for i in ids)
    with connect(db_url) as conn:
        rows = conn.execute(
            test_query("idempotency_keys_of_flow"), {"flow_slug": "charge"}
        ).fetchall()
    assert rows == [("a", ids[0]), ("b", ids[1]), ("c", ids[3])]  # no row for the keyless input


def test_a_batch_returns_the_runs_of_used_keys_and_starts_only_new_ones(
    app: PgFlow, db_url: str
) -> None:
    single = app.start_flow("charge", {"order": 1}, idempotency_key="k1").run_id
    batch = app.client.start_many(
        "charge", [{"order": 2}, {"order": 3}], idempotency_keys=["k2", "k3"]
    )
    ids = app.client.start_many(
        "charge",
        [{"order": 10}, {"order": 20}, {"order": 30}, {"order": 40}, {"order": 50}],
        idempotency_keys=["k1", "k4", "k3", None, "k2"],
    )
    assert ids[0] == single and ids[2] == batch[1] and ids[4] == batch[0]
    assert len({*ids, *batch, single}) == 5  # k4's run and the keyless one are new
    # The inputs of used keys are not compared: their runs keep their own.
    assert app.get_run(single).input == {"order": 1}
    assert [app.get_run(i).input for i in (ids[1], ids[3])] == [{"order": 20}, {"order": 40}]
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 5
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == 4
    assert sorted(message_runs(db_url, "charge")) == sorted(str(i) for i in {*ids, *batch, single})

    # The same batch again starts nothing; the single start finds a batch's key too.
    again = app.client.start_many(
        "charge", [{"order": 0}] * 5, idempotency_keys=["k1", "k4", "k3", "k4", "k2"]
    )
    assert again == [ids[0], ids[1], ids[2], ids[1], ids[4]]
    assert app.client.start_flow("charge", {"order": 0}, idempotency_key="k4") == ids[1]
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 5
    assert len(queue_messages(db_url, "charge")) == 5


def test_a_key_repeated_in_a_batch_gives_the_run_of_its_first_input(
    app: PgFlow, db_url: str
) -> None:
    app.ensure_flow(app.get_flow("charge"))
    ids = app.client.start_many(
        "charge",
        [{"order": i} for i in range(5)],
        idempotency_keys=["d", "e", "d", None, "d"],
        priority=4,
    )
    assert ids[0] == ids[2] == ids[4]
    assert len({ids[0], ids[1], ids[3]}) == 3
    assert app.get_run(ids[0]).input == {"order": 0}
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3
    assert sorted(message_runs(db_url, "charge")) == sorted({str(i) for i in ids})
    with connect(db_url) as conn:  # the priority reached exactly the runs started
        controls = conn.execute(test_query("limits_run_controls")).fetchall()
    assert sorted((c[0], c[1]) for c in controls) == sorted((str(i), 4) for i in {*ids})


def test_a_batch_replaces_expired_keys_and_fails_whole(app: PgFlow, db_url: str) -> None:
    app.ensure_flow(app.get_flow("charge"))
    old = app.client.start_many("charge", [{"order": 1}], idempotency_keys=["t"], idempotency_ttl=1)
    assert app.client.start_many("charge", [{"order": 1}], idempotency_keys=["t"]) == old
    time.sleep(1.5)
    new = app.client.start_many("charge", [{"order": 2}, {"order": 3}], idempotency_keys=["t", "t"])
    assert new[0] == new[1] != old[0]
    assert app.get_run(new[0]).input == {"order": 2}
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 2

    # A batch that fails starts and reserves nothing; one rolled back leaves its keys free.
    with pytest.raises(FlowNotFound):
        app.client.start_many("nope", [{}, {}], idempotency_keys=["x", "y"])
    assert count(db_url, "idempotency_key_rows", flow_slug="nope") == 0
    with connect(db_url, autocommit=False) as conn:
        app.client.start_many("charge", [{"order": 4}], idempotency_keys=["r"], connection=conn)
        conn.rollback()
    kept = app.client.start_many("charge", [{"order": 5}], idempotency_keys=["r"])
    assert app.client.get_run(kept[0]).input == {"order": 5}
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3


def test_a_batch_waits_for_an_open_transaction_holding_one_of_its_keys(
    app: PgFlow, db_url: str
) -> None:
    app.ensure_flow(app.get_flow("charge"))
    outcome: dict[str, list[UUID]] = {}
    with connect(db_url, autocommit=False) as conn:
        first = app.client.start_many(
            "charge", [{"order": 1}, {"order": 2}], idempotency_keys=["w1", "w2"], connection=conn
        )
        second = threading.Thread(
            target=lambda: outcome.update(
                ids=app.client.start_many(
                    "charge", [{"order": 3}, {"order": 4}], idempotency_keys=["w3", "w2"]
                )
            )
        )
        second.start()
        second.join(1.0)
        assert second.is_alive()  # waiting on the uncommitted reservation of w2
        conn.commit()
    second.join(10)
    assert outcome["ids"][1] == first[1] and outcome["ids"][0] not in first
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3


def test_concurrent_batches_with_overlapping_keys_make_one_run_per_key(
    app: PgFlow, db_url: str
) -> None:
    app.ensure_flow(app.get_flow("charge"))
    starters, rounds = 6, 3
    clients = [Client(db_url) for _ in range(starters + 1)]
    for client in clients:  # connections open before the barrier: the starts really race
        client.flow_exists("charge")
    keys = [f"key-{i}" for i in range(40)]
    seen: dict[str, set[UUID]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def batch(client: Client, barrier: threading.Barrier, mine: list[str]) -> None:
        try:
            barrier.wait(10)
            ids = client.start_many("charge", [{"order": 1}] * len(mine), idempotency_keys=mine)
            with lock:
                for key, run in zip(mine, ids, strict=True):
                    seen.setdefault(key, set()).add(run)
        except BaseException as exc:
            errors.append(exc)

    def singles(client: Client, barrier: threading.Barrier, mine: list[str]) -> None:
        try:
            barrier.wait(10)
            for key in mine:
                run = client.start_flow("charge", {"order": 2}, idempotency_key=key)
                with lock:
                    seen.setdefault(key, set()).add(run)
        except BaseException as exc:
            errors.append(exc)

    rng = random.Random(7)
    for _ in range(rounds):
        barrier = threading.Barrier(starters + 1)
        # Each batch takes most keys, in its own order (with repeats), so that batches meet on
        # keys in every order; a thread of single starts races them too.
        plans = [rng.sample(keys, 30) + rng.sample(keys, 3) for _ in range(starters)]
        threads = [
            threading.Thread(target=batch, args=(client, barrier, plan))
            for client, plan in zip(clients, plans, strict=False)
        ]
        threads.append(
            threading.Thread(target=singles, args=(clients[-1], barrier, rng.sample(keys, 8)))
        )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        keys = [f"{k}+" for k in keys]  # the next round uses fresh keys
    for client in clients:
        client.close()
    assert not errors, errors
    assert all(len(runs) == 1 for runs in seen.values())
    runs = {run for found in seen.values() for run in found}
    assert len(runs) == len(seen)
    assert count(db_url, "runs_of_flow", flow_slug="charge") == len(seen)
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == len(seen)
    assert sorted(message_runs(db_url, "charge")) == sorted(str(r) for r in runs)


@pytest.mark.parametrize(
    ("keys", "ttl", "message"),
    [
        (["a", "b"], None, "idempotency_keys has 2 keys but there are 3 inputs"),
        (["a", "", "c"], None, r"idempotency_keys\[1\] must be a non-empty string or None, got ''"),
        (["a", "b", 7], None, r"idempotency_keys\[2\] must be .* got 7"),
        (["a", "b\x00", "c"], None, r"idempotency_keys\[1\] .* got 'b\\x00'"),
        ("abc", None, "must be a list with one key"),
        (None, 5, "idempotency_ttl needs idempotency_keys"),
        (["a", "b", "c"], -1, "idempotency_ttl must be a number of seconds > 0, got -1"),
    ],
)
def test_bad_batch_keys_are_refused_and_start_nothing(
    app: PgFlow, db_url: str, keys: Any, ttl: Any, message: str
) -> None:
    inputs = [{"order": i} for i in range(3)]
    with pytest.raises(FlowInputError, match=message):
        app.start_many("charge", inputs, idempotency_keys=keys, idempotency_ttl=ttl)
    with pytest.raises(FlowInputError, match=message):
        app.client.start_many("charge", inputs, idempotency_keys=keys, idempotency_ttl=ttl)
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 0
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == 0


def test_the_sql_function_says_which_runs_it_started_and_refuses_bad_arrays(
    app: PgFlow, db_url: str
) -> None:
    app.ensure_flow(app.get_flow("charge"))
    used = app.client.start_flow("charge", {"order": 0}, idempotency_key="u")

    def call(inputs: list[Any], keys: Sequence[str | None]) -> list[tuple[Any, ...]]:
        with connect(db_url) as conn:
            return conn.execute(
                test_query("start_flows_idempotent_raw"),
                {
                    "flow_slug": "charge",
                    "inputs": [Jsonb(i) for i in inputs],
                    "idempotency_keys": keys,
                },
            ).fetchall()

    rows = call([1, 2, 3, 4], ["n", "u", None, "n"])
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[2] for r in rows] == [True, False, True, False]
    assert rows[1][1] == used and rows[3][1] == rows[0][1]
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3

    for inputs, keys, message in [
        ([1, 2], ["a"], "idempotency_keys has 1 elements but inputs has 2"),
        ([1, 2, 3], ["a", "b", ""], "key #2 is empty"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            call(inputs, keys)
    assert count(db_url, "runs_of_flow", flow_slug="charge") == 3
    assert count(db_url, "idempotency_key_rows", flow_slug="charge") == 2
