"""Bad SQL-level input raises what pgflow 0.8.1 raises and leaves no partial rows behind."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.sql_bad_input import BAD_CALLS, BadCall, map_chain, prepare
from tests.reference.driver import Db


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    database = Db(db_url, "ours")
    yield database
    database.close()


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda b: b.id)
def test_bad_input_raises_what_pgflow_raises_and_leaves_nothing(db: Db, bad: BadCall) -> None:
    before = prepare(db, bad)
    with pytest.raises(psycopg.Error) as caught:
        db.call(bad.function, **bad.args)
    assert (caught.value.sqlstate, caught.value.diag.message_primary) == (bad.sqlstate, bad.message)
    assert db.execute("sqlcore_row_counts") == [before]


def test_duplicate_dependencies_are_refused(db: Db) -> None:
    # Deliberate difference (test_differential_divergences): pgflow 0.8.1 counts ["a", "a"] as
    # two dependencies but records one, so the step could never start.
    for function, args in [
        ("create_flow", {"flow_slug": "dup"}),
        ("add_step", {"flow_slug": "dup", "step_slug": "a"}),
    ]:
        db.call(function, **args)
    before = db.execute("sqlcore_row_counts")
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match='dependency "a" of step "b" is listed twice'
    ):
        db.call("add_step", flow_slug="dup", step_slug="b", deps_slugs=["a", "a"])
    assert db.execute("sqlcore_row_counts") == before


def test_a_cascade_of_49_taskless_steps_completes(db: Db) -> None:
    # One short of the limit: BAD_CALLS' chain of 50 fails its start_flow.
    for function, args in map_chain("deep", 49):
        db.call(function, **args)
    (run,) = db.call("start_flow", flow_slug="deep", input=[])
    assert (run["status"], run["output"]) == ("completed", {"m48": []})


def test_definitions_are_idempotent_and_keep_their_options(db: Db) -> None:
    (flow,) = db.call("create_flow", flow_slug="idem", max_attempts=7, timeout=9)
    (again,) = db.call("create_flow", flow_slug="idem", max_attempts=1)
    assert again == flow
    (step,) = db.call("add_step", flow_slug="idem", step_slug="a", timeout=5)
    (step_again,) = db.call("add_step", flow_slug="idem", step_slug="a", timeout=50)
    assert step_again == step
    (second,) = db.call("add_step", flow_slug="idem", step_slug="b", deps_slugs=["a"])
    assert (second["step_index"], second["deps_count"]) == (1, 1)
    assert db.execute("sqlcore_row_counts")[0]["queues"] == 1
