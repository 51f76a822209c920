"""The set-based paths (0090_set_based.sql) against our own per-row functions, where the reference
pgflow 0.8.1 has nothing to compare with: flow control, delays and trace context at start, and
flows with conditions (which the set hands to the per-row functions). Two databases of our
schema get the same work, one through the set-based functions, one call per row; everything
observable must match. On an upstream-installed pgflow schema the same functions work per row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.integration.test_differential_set_based import (
    define,
    drain,
    report,
    report_both,
    run_id,
    start_many,
)
from tests.reference import install_realtime
from tests.reference.driver import Db, Pair
from tests.support.databases import clone_database, drop

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "a=1",
}


@pytest.fixture
def per_row(pg_admin_url: str, schema_template: str) -> Iterator[Db]:
    """A second database of our schema, driven one call per row."""
    url = clone_database(pg_admin_url, schema_template, prefix="p")
    install_realtime(url, "log")
    db = Db(url, "per-row")
    yield db
    db.close()
    drop(pg_admin_url, url)


@pytest.fixture
def twins(ours: Db, per_row: Db) -> Pair:
    pair = Pair(ours, per_row)
    pair.add_worker()
    return pair


def test_controlled_delayed_traced_start_matches_per_row_starts(twins: Pair) -> None:
    define(twins, "ctl", [("a", [], "single"), ("b", [], "map"), ("c", ["a"], "single")])
    twins.call("add_step", flow_slug="ctl", step_slug="late", start_delay=100)
    inputs = [[1, 2], [], [3]]
    keys = [{"": "k1"}, {}, {"a": "x"}]
    ids = [run_id(i + 1) for i in range(3)]
    args = {"delay_seconds": 30, "priority": 4, **TRACE}
    rows = twins.ours.execute(
        "setb_start_flows_controlled",
        {
            "flow_slug": "ctl",
            "inputs": [Jsonb(v) for v in inputs],
            "run_ids": ids,
            "keys": [Jsonb(k) for k in keys],
            **args,
        },
    )
    assert [r["run_id"] for r in rows] == ids
    with twins.reference.conn.transaction():
        for value, rid, key in zip(inputs, ids, keys, strict=True):
            twins.reference.execute(
                "setb_start_flow_controlled",
                {
                    "flow_slug": "ctl",
                    "input": Jsonb(value),
                    "run_id": rid,
                    "keys": Jsonb(key),
                    "delay_seconds": 30,
                    "priority": 4,
                },
            )
            twins.reference.execute("setb_save_trace", {"run_id": rid, **TRACE})
    state = twins.assert_same_state()
    visible = {
        (m["message"]["step_slug"], m["visible_in"] > 25, m["visible_in"] > 95)
        for m in state["queues"]["ctl"]["live"]
    }
    assert visible == {("a", True, False), ("b", True, False), ("late", True, True)}
    controls = twins.execute("setb_controls")
    assert [(c["priority"], c["keys"], c["traceparent"]) for c in controls] == [
        (4, k, TRACE["traceparent"]) for k in keys
    ]
    assert twins.execute("setb_flow_limits") == [
        {"flow_slug": "ctl", "step_slug": "", "prioritized": True}
    ]


def conditional_flow(pair: Pair) -> None:
    define(pair, "cond", [("a", [], "single"), ("b", ["a"], "single"), ("c", ["b"], "single")])
    for db in pair.both:
        db.execute(
            "setb_set_condition",
            {
                "flow_slug": "cond",
                "step_slug": "b",
                "if_pattern": Jsonb({"a": {"go": True}}),
                "when_unmet": "skip",
            },
        )


def test_conditions_keep_working_through_start_many_and_batches(twins: Pair) -> None:
    conditional_flow(twins)
    # start_many below is ours: start_flows on one side, per-row start_flow on the other.
    start_many(twins, "cond", [{"n": 1}, {"n": 2}, {"n": 3}], first=1)
    twins.assert_same_state()
    tasks = twins.claim("cond")
    outputs = {run_id(1): {"go": True}, run_id(2): {"go": False}, run_id(3): {"go": True}}
    reports = [report(t, outputs[t["run_id"]]) for t in tasks]
    report_both(twins, reports, by_set=False)  # a flow with conditions goes per row
    twins.assert_same_state()
    assert twins.execute("setb_skipped") == [
        {"run_id": run_id(2), "step_slug": "b", "skip_reason": "condition_unmet"}
    ]


def test_batches_mixing_conditional_and_plain_flows(twins: Pair) -> None:
    conditional_flow(twins)
    define(twins, "plain", [("a", [], "single"), ("b", ["a"], "map")])
    start_many(twins, "cond", [{"n": 1}, {"n": 2}], first=1)
    start_many(twins, "plain", [{"n": 3}, {"n": 4}], first=3)
    tasks = twins.claim("cond") + twins.claim("plain")
    outputs: dict[Any, Any] = {
        run_id(1): {"go": True},
        run_id(2): {"go": False},
        run_id(3): [1, 2],
        run_id(4): [],
    }
    rows = report_both(twins, [report(t, outputs[t["run_id"]]) for t in tasks])
    assert [r["run_status"] for r in rows] == [None, None, None, "completed"]
    twins.assert_same_state()
    drain(twins, "plain", batch=5)
    assert {
        r["status"] for r in twins.assert_same_state()["runs"] if r["flow_slug"] == "plain"
    } == {"completed"}


@pytest.mark.node
def test_upstream_schema_starts_and_reports_per_row(
    pg_admin_url: str, upstream_db_url: str, reference_template: str
) -> None:
    """Our functions on a pgflow schema installed by upstream: start_flows and report_tasks go
    through its own functions, one row at a time, and do what they do."""
    url = clone_database(pg_admin_url, reference_template, prefix="r")
    upstream, reference = Db(upstream_db_url, "upstream"), Db(url, "reference")
    try:
        pair = Pair(upstream, reference)
        pair.add_worker()
        define(pair, "up", [("each", [], "map"), ("sum", ["each"], "single")])
        start_many(pair, "up", [[1, 2], [], [3]], first=1)
        pair.assert_same_state()
        tasks = pair.claim("up")
        with upstream.conn.transaction():
            rows = upstream.execute(
                "setb_report_tasks", {"reports": Jsonb([report(t, t["input"]) for t in tasks])}
            )
        assert {r["outcome"] for r in rows} == {"completed"}
        for task in sorted(tasks, key=lambda t: (t["run_id"], t["step_slug"], t["task_index"])):
            reference.call(
                "complete_task",
                run_id=task["run_id"],
                step_slug=task["step_slug"],
                task_index=task["task_index"],
                output=task["input"],
            )
        pair.assert_same_state()
    finally:
        upstream.close()
        reference.close()
        drop(pg_admin_url, url)


def test_empty_start_many_starts_nothing(ours: Db) -> None:
    rows = ours.execute("setb_start_flows", {"flow_slug": "none", "inputs": [], "run_ids": None})
    assert rows == []
    assert ours.observe()["runs"] == []


def test_lengths_must_match(ours: Db) -> None:
    ours.call("create_flow", flow_slug="len")
    with pytest.raises(Exception, match="run_ids has 1 elements but inputs has 2"):
        ours.execute(
            "setb_start_flows",
            {"flow_slug": "len", "inputs": [Jsonb(1), Jsonb(2)], "run_ids": [uuid.uuid4()]},
        )
