"""Conditional steps in the SQL core: what pgflow 0.8.1 readers see, and the cases around them.

Flows are compiled by our client; runs are driven call by call through pgflow's functions, as a
worker of any language does.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgflow_kombu.client import Client, read_flow_shape
from pgflow_kombu.db.connect import connect
from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.conditions import contains
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.flows.shapes import compare_shapes
from tests.reference.driver import WORKER_ID, Db
from tests.support.sql import test_query

STATUSES_081 = {"created", "started", "completed", "failed"}


def compile_flow(url: str, flow: Flow) -> None:
    client = Client(url)
    try:
        assert client.compile_flow(flow.shape())
    finally:
        client.close()


def claim(db: Db, flow_slug: str) -> list[dict[str, Any]]:
    return db.call(
        "start_tasks", flow_slug=flow_slug, msg_ids=db.read(flow_slug), worker_id=WORKER_ID
    )


def skipped(db: Db, run_id: Any) -> dict[str, tuple[str, str | None]]:
    rows = db.execute("conditions_skipped_steps", {"run_id": run_id})
    return {r["step_slug"]: (r["skip_reason"], r["error_message"]) for r in rows}


def states(db: Db, run_id: Any) -> dict[str, dict[str, Any]]:
    return {s["step_slug"]: s for s in db.observe()["step_states"] if s["run_id"] == run_id}


def branch_flow() -> Flow:
    flow = Flow("sqlcond", base_delay=0)
    flow.add_step("a", if_={"run": {"kind": "a"}})
    flow.add_step("b")
    flow.add_step("c", depends_on=["a", "b"])
    flow.add_step("m", depends_on=["a"], step_type="map")
    return flow


def test_a_skipped_step_reads_as_completed_without_output_to_a_081_reader(ours: Db) -> None:
    compile_flow(ours.url, branch_flow())
    ours.add_worker()
    run_id = ours.call("start_flow", flow_slug="sqlcond", input={"kind": "b"})[0]["run_id"]
    assert [t["step_slug"] for t in claim(ours, "sqlcond")] == ["b"]
    ours.call("complete_task", run_id=run_id, step_slug="b", task_index=0, output="B")
    (task,) = claim(ours, "sqlcond")
    # The skipped dependency's key is absent, not null (pgflow 0.14's input).
    assert (task["step_slug"], task["input"]) == ("c", {"run": {"kind": "b"}, "b": "B"})
    ours.call("complete_task", run_id=run_id, step_slug="c", task_index=0, output="C")

    seen = ours.observe()
    run = next(r for r in seen["runs"] if r["run_id"] == run_id)
    # The map over the skipped step had no task and outputs [] (it is not skipped itself).
    assert (run["status"], run["output"]) == ("completed", {"c": "C", "m": []})
    by_step = states(ours, run_id)
    assert {s["status"] for s in seen["step_states"]} <= STATUSES_081
    assert by_step["a"]["status"] == "completed" and by_step["a"]["remaining_tasks"] == 0
    assert skipped(ours, run_id) == {"a": ("condition_unmet", None)}
    events = [e for e in seen["events"] if e["topic"] == f"pgflow:run:{run_id}"]
    assert not [e for e in events if "skipped" in json.dumps(e)]
    completed_a = [e for e in events if e["event"] == "step:a:completed"]
    assert len(completed_a) == 1 and completed_a[0]["payload"]["output"] is None
    assert [e["event"] for e in events if e["event"].startswith("step:m")] == ["step:m:completed"]


def test_a_step_whose_condition_holds_runs_with_its_dependencies(ours: Db) -> None:
    compile_flow(ours.url, branch_flow())
    ours.add_worker()
    run_id = ours.call("start_flow", flow_slug="sqlcond", input={"kind": "a"})[0]["run_id"]
    assert sorted(t["step_slug"] for t in claim(ours, "sqlcond")) == ["a", "b"]
    assert skipped(ours, run_id) == {}
    assert states(ours, run_id)["a"]["status"] == "started"


def test_an_unmet_condition_in_fail_mode_fails_the_run_with_081_events(ours: Db) -> None:
    flow = Flow("sqlfail", base_delay=0)
    flow.add_step("first")
    flow.add_step("guard", depends_on=["first"], if_={"first": {"ok": True}}, when_unmet="fail")
    flow.add_step("side")
    compile_flow(ours.url, flow)
    ours.add_worker()
    run_id = ours.call("start_flow", flow_slug="sqlfail", input={})[0]["run_id"]
    claim(ours, "sqlfail")
    ours.call("complete_task", run_id=run_id, step_slug="first", task_index=0, output={"ok": 0})
    seen = ours.observe()
    run = next(r for r in seen["runs"] if r["run_id"] == run_id)
    assert run["status"] == "failed"
    assert states(ours, run_id)["guard"]["error_message"] == "Condition not met"
    # side's message (claimed, still running) is archived with the run.
    assert seen["queues"]["sqlfail"]["live"] == []
    tail = [e["event"] for e in seen["events"]][-2:]
    assert tail == ["step:guard:failed", "run:failed"]
    assert seen["events"][-1]["payload"]["error_message"] == "Condition not met"
    # A late completion of side changes nothing on the failed run.
    ours.call("complete_task", run_id=run_id, step_slug="side", task_index=0, output=1)
    assert states(ours, run_id)["side"]["status"] == "started"


def test_an_exhausted_map_task_skips_the_map_and_stops_its_siblings(ours: Db) -> None:
    flow = Flow("sqlmapx", max_attempts=1, base_delay=0)
    flow.add_step("part", step_type="map", when_exhausted="skip")
    flow.add_step("after", depends_on=["part"])
    compile_flow(ours.url, flow)
    ours.add_worker()
    run_id = ours.call("start_flow", flow_slug="sqlmapx", input=[1, 2, 3])[0]["run_id"]
    tasks = claim(ours, "sqlmapx")
    assert len(tasks) == 3
    ours.call("complete_task", run_id=run_id, step_slug="part", task_index=0, output=1)
    ours.call("fail_task", run_id=run_id, step_slug="part", task_index=1, error_message="bad")
    # The sibling still running reports late: nothing changes.
    ours.call("complete_task", run_id=run_id, step_slug="part", task_index=2, output=3)
    seen = ours.observe()
    part_tasks = [t for t in seen["step_tasks"] if t["step_slug"] == "part"]
    assert [(t["status"], t["error_message"]) for t in part_tasks] == [
        ("completed", None),
        ("failed", "bad"),
        ("failed", "Step skipped"),
    ]
    # Every message of part is archived; after's (it is ready) is the only live one.
    live = seen["queues"]["sqlmapx"]["live"]
    assert [m["message"]["step_slug"] for m in live] == ["after"]
    assert skipped(ours, run_id) == {"part": ("handler_failed", "bad")}
    (task,) = claim(ours, "sqlmapx")
    assert task["input"] == {"run": [1, 2, 3]}  # no 'part' key
    ours.call("complete_task", run_id=run_id, step_slug="after", task_index=0, output="done")
    run = next(r for r in ours.observe()["runs"] if r["run_id"] == run_id)
    assert (run["status"], run["output"]) == ("completed", {"after": "done"})
    assert {s["status"] for s in ours.observe()["step_states"]} <= STATUSES_081


def test_when_exhausted_applies_only_to_the_last_attempt(ours: Db) -> None:
    flow = Flow("sqlretry", max_attempts=2, base_delay=0)
    flow.add_step("try_me", when_exhausted="skip-cascade")
    flow.add_step("next_one", depends_on=["try_me"])
    flow.add_step("free")
    compile_flow(ours.url, flow)
    ours.add_worker()
    run_id = ours.call("start_flow", flow_slug="sqlretry", input={})[0]["run_id"]
    claim(ours, "sqlretry")
    ours.call("fail_task", run_id=run_id, step_slug="try_me", task_index=0, error_message="e1")
    assert skipped(ours, run_id) == {}
    ours.make_visible("sqlretry")
    assert [t["step_slug"] for t in claim(ours, "sqlretry")] == ["try_me"]
    ours.call("fail_task", run_id=run_id, step_slug="try_me", task_index=0, error_message="e2")
    assert skipped(ours, run_id) == {
        "try_me": ("handler_failed", "e2"),
        "next_one": ("dependency_skipped", "e2"),
    }
    ours.call("complete_task", run_id=run_id, step_slug="free", task_index=0, output="f")
    run = next(r for r in ours.observe()["runs"] if r["run_id"] == run_id)
    assert (run["status"], run["output"], run["remaining_steps"]) == ("completed", {"free": "f"}, 0)


CONTAINMENT: list[tuple[Json, Json]] = [
    ({"a": 1}, {"a": 1}),
    ({"a": 1}, {"a": 1.0}),
    ({"a": 1}, {"a": True}),
    ({"a": True}, {"a": True}),
    ({"a": None}, {"a": None}),
    ({"a": 1}, {"a": None}),
    ({"a": ["x", "y"]}, {"a": "x"}),
    ({"a": ["x", "y"]}, {"a": ["y"]}),
    ({"a": ["x", "y"]}, {"a": []}),
    ({"a": [1, [2, 3]]}, {"a": [[3]]}),
    ({"a": [{"b": 1, "c": 2}]}, {"a": [{"b": 1}]}),
    ({"a": [{"b": 1}]}, {"a": [{"b": 2}]}),
    ({"a": {"b": {"c": 1}, "d": 2}}, {"a": {"b": {}}}),
    ({"a": "s"}, {"a": {}}),
    ({}, {"a": {}}),
    ({"a": 1}, {}),
    ({"a": [1, 1]}, {"a": [1, 1, 1]}),
    ({"a": "1"}, {"a": 1}),
]


def test_containment_in_python_matches_postgresql(conn: psycopg.Connection[Any]) -> None:
    for document, pattern in CONTAINMENT:
        row = conn.execute(
            test_query("conditions_contains"),
            {"document": json.dumps(document), "pattern": json.dumps(pattern)},
        ).fetchone()
        assert row is not None
        assert contains(document, pattern) is row[0], (document, pattern)


def test_the_stored_shape_includes_conditions_and_a_changed_one_is_a_structure_difference(
    db_url: str,
) -> None:
    flow = Flow("sqlshape")
    flow.add_step("a", if_={"run": {"x": [1]}}, if_not={"run": {"y": None}}, when_unmet="fail")
    flow.add_step("b", depends_on=["a"], when_exhausted="skip")
    flow.add_step("c", depends_on=["b"])
    compile_flow(db_url, flow)
    with connect(db_url) as conn:
        stored = read_flow_shape(conn, "sqlshape")
    assert compare_shapes(flow.shape(), stored) == []
    assert "condition" not in stored["steps"][2]

    changed = Flow("sqlshape")
    changed.add_step("a", if_={"run": {"x": [2]}}, if_not={"run": {"y": None}}, when_unmet="fail")
    changed.add_step("b", depends_on=["a"])
    changed.add_step("c", depends_on=["b"])
    diffs = compare_shapes(changed.shape(), stored)
    assert [(d.kind, d.message.split(":")[0]) for d in diffs] == [
        ("structure", "Step at index 0 ('a')"),
        ("structure", "Step at index 1 ('b')"),
    ]


@pytest.mark.node
def test_an_upstream_installed_schema_refuses_conditional_flows(upstream_db_url: str) -> None:
    flow = Flow("upcond")
    flow.add_step("a", if_={"run": {"x": 1}})
    client = Client(upstream_db_url)
    try:
        with pytest.raises(FlowDefinitionError, match="installed by pgflow's own tools"):
            client.compile_flow(flow.shape())
        assert not client.flow_exists("upcond")  # nothing written
        plain = Flow("upplain")
        plain.add_step("a")
        assert client.compile_flow(plain.shape())
    finally:
        client.close()
    with connect(upstream_db_url) as conn, pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute(
            test_query("conditions_set_step_condition"),
            {"flow_slug": "upplain", "step_slug": "a", "if_pattern": '{"run": {}}'},
        )


def test_a_conditional_flow_with_skipped_runs_can_be_upserted_and_deleted(ours: Db) -> None:
    compile_flow(ours.url, branch_flow())
    run_id = ours.call("start_flow", flow_slug="sqlcond", input={"kind": "b"})[0]["run_id"]
    assert skipped(ours, run_id) == {"a": ("condition_unmet", None)}
    client = Client(ours.url)
    try:
        result = client.upsert_flow(
            "sqlcond",
            steps=[
                {"slug": "a", "condition": {"if_": {"run": {"kind": "z"}}}},
                {"slug": "b", "deps": ["a"]},
            ],
        )
        assert result["status"] == "recompiled"
        assert any("condition differs" in d for d in result["differences"])
        assert skipped(ours, run_id) == {}  # the old runs went with the old definition
        with connect(ours.url) as conn:
            stored = read_flow_shape(conn, "sqlcond")
        assert stored["steps"][0]["condition"]["if_"] == {"run": {"kind": "z"}}
        client.delete_flow("sqlcond")
        with connect(ours.url) as conn:
            rows = conn.execute(test_query("conditions_count_rows")).fetchone()
        assert rows == (0, 0)
    finally:
        client.close()
