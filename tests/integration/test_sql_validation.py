"""Bad SQL-level input raises what pgflow 0.8.1 raises and leaves no partial rows behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.errors import FlowDefinitionError
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


def _step(slug: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "deps": deps or [], "step_type": "single", "options": {}, **extra}


@pytest.mark.parametrize(
    ("flow_slug", "options", "steps", "explanation"),
    [
        ("f" * 48, {}, [], "at most 47 are allowed"),
        ("my-flow", {}, [], "invalid flow slug 'my-flow'"),
        ("f", {"timeout": 0}, [], "timeout must be a positive integer"),
        ("f", {}, [_step("bad slug")], "invalid step slug 'bad slug'"),
        ("f", {}, [_step("a", ["a"])], "a step cannot depend on itself"),
        ("f", {}, [_step("a", ["nope"])], "depends on unknown step 'nope'"),
        ("f", {}, [_step("a"), _step("b", ["a", "a"])], "dependency 'a' is listed twice"),
        ("f", {}, [_step("a", step_type="fanout")], "step_type must be 'single' or 'map'"),
        ("f", {}, [_step("a", options={"start_delay": -1})], "start_delay must be"),
        (
            "f",
            {},
            [_step("a"), _step("b"), _step("m", ["a", "b"], step_type="map")],
            "a map step can have at most one dependency",
        ),
    ],
)
def test_python_callers_get_an_explanation_before_the_sql_runs(
    db_url: str,
    db: Db,
    flow_slug: str,
    options: dict[str, int],
    steps: list[dict[str, Any]],
    explanation: str,
) -> None:
    # The SQL raises pgflow 0.8.1's constraint errors; the client validates a shape first.
    before = db.execute("sqlcore_row_counts")
    client = Client(db_url)
    try:
        shape: Any = {"flow_slug": flow_slug, "options": options, "steps": steps}
        with pytest.raises(FlowDefinitionError, match=re.escape(explanation)):
            client.compile_flow(shape)
        with pytest.raises(FlowDefinitionError, match=re.escape(explanation)):
            client.replace_flow(shape)
    finally:
        client.close()
    assert db.execute("sqlcore_row_counts") == before
