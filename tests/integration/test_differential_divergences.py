"""Every deliberate difference from pgflow 0.8.1, with its reason, shown side by side.

Everything else our schema does (results, state, events, errors) is what the reference does:
test_differential.py and test_differential_errors.py. ``Pair`` comparisons there apply
``reconcile`` for the one difference that shows in results (a completed task's error_message).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.reference.driver import WORKER_ID, Db, Pair, assert_same, diagnostics

pytestmark = pytest.mark.node

RUN = uuid.UUID("11111111-1111-4111-8111-111111111111")


def _repeated_complete_task(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="twice")
    pair.call("add_step", flow_slug="twice", step_slug="a")
    pair.call("add_step", flow_slug="twice", step_slug="b", deps_slugs=["a"])
    pair.call("start_flow", flow_slug="twice", input={}, run_id=RUN)
    (a,) = pair.claim("twice")
    pair.complete(a, "first")
    before = pair.assert_same_state()

    for db in pair.both:
        (row,) = db.call("complete_task", run_id=RUN, step_slug="a", task_index=0, output="second")
        assert (row["status"], row["output"]) == ("completed", "first")

    ours, reference = pair.ours.observe(), pair.reference.observe()
    for part in ("runs", "step_states", "step_tasks", "queues"):
        assert_same(ours[part], reference[part], part)
        assert_same(ours[part], before[part], part)
    assert [e["event"] for e in ours["events"]] == [e["event"] for e in before["events"]]
    assert [e["event"] for e in reference["events"]] == [
        *(e["event"] for e in before["events"]),
        "step:a:completed",
    ]
    assert reference["events"][-1]["payload"]["output"] == "second"


def _concurrent_start_tasks(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="race")
    pair.call("add_step", flow_slug="race", step_slug="a")
    pair.call("start_flow", flow_slug="race", input={}, run_id=RUN)
    msg_ids = pair.read("race")
    second: dict[str, list[dict[str, Any]]] = {}
    for db in pair.both:
        other = Db(db.url, "other")
        try:
            with db.conn.transaction():
                (_first,) = db.call(
                    "start_tasks", flow_slug="race", msg_ids=msg_ids, worker_id=WORKER_ID
                )
                thread = threading.Thread(
                    target=lambda db=db, other=other: second.__setitem__(
                        db.name,
                        other.call(
                            "start_tasks", flow_slug="race", msg_ids=msg_ids, worker_id=WORKER_ID
                        ),
                    )
                )
                thread.start()
                thread.join(timeout=0.5)
                assert thread.is_alive()  # waits on the row the first call claimed
            thread.join(timeout=10)
        finally:
            other.close()
    assert second["ours"] == []
    assert [t["msg_id"] for t in second["reference"]] == msg_ids
    for db in pair.both:
        (task,) = db.execute("sqlcore_step_tasks")
        assert task["attempts_count"] == 1


def _duplicate_dependency(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="dup")
    pair.call("add_step", flow_slug="dup", step_slug="a")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        pair.ours.call("add_step", flow_slug="dup", step_slug="b", deps_slugs=["a", "a"])
    assert caught.value.diag.message_primary == 'dependency "a" of step "b" is listed twice'
    assert pair.ours.execute("sqlcore_row_counts")[0]["steps"] == 1

    (step,) = pair.reference.call("add_step", flow_slug="dup", step_slug="b", deps_slugs=["a", "a"])
    assert step["deps_count"] == 2  # one deps row: the step never starts
    (run,) = pair.reference.call("start_flow", flow_slug="dup", input={})
    (_a,) = pair.reference.call(
        "start_tasks", flow_slug="dup", msg_ids=pair.reference.read("dup"), worker_id=WORKER_ID
    )
    pair.reference.call(
        "complete_task", run_id=run["run_id"], step_slug="a", task_index=0, output=1
    )
    assert pair.reference.read("dup") == []
    (state,) = pair.reference.call("get_run_with_states", run_id=run["run_id"])
    steps = {s["step_slug"]: s for s in state["get_run_with_states"]["steps"]}
    assert (steps["b"]["status"], steps["b"]["remaining_deps"]) == ("created", 1)


def _completed_task_error_message(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="flaky", base_delay=0)
    pair.call("add_step", flow_slug="flaky", step_slug="a")
    pair.call("start_flow", flow_slug="flaky", input={}, run_id=RUN)
    (task,) = pair.claim("flaky")
    pair.fail(task, "boom")
    (task,) = pair.claim("flaky")
    rows = {
        db.name: db.call("complete_task", run_id=RUN, step_slug="a", task_index=0, output="fine")[0]
        for db in pair.both
    }
    assert (rows["ours"]["status"], rows["ours"]["error_message"]) == ("completed", None)
    assert (rows["reference"]["status"], rows["reference"]["error_message"]) == (
        "completed",
        "boom",
    )
    for db, expected in ((pair.ours, None), (pair.reference, "boom")):
        (stored,) = db.execute("sqlcore_step_tasks")
        assert (stored["status"], stored["attempts_count"], stored["error_message"]) == (
            "completed",
            2,
            expected,
        )


def _without_realtime(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="plain")
    pair.call("add_step", flow_slug="plain", step_slug="a")
    for db in pair.both:
        db.execute("sqlcore_drop_realtime_send")
    (run,) = pair.ours.call("start_flow", flow_slug="plain", input={})
    assert run["status"] == "started"
    with pytest.raises(psycopg.errors.UndefinedFunction) as caught:
        pair.reference.call("start_flow", flow_slug="plain", input={})
    assert diagnostics(caught.value)["message_primary"] == (
        "function realtime.send(jsonb, unknown, text, boolean) does not exist"
    )


@dataclass(frozen=True)
class Divergence:
    id: str
    reason: str
    shown_by: Callable[[Pair], None]


DIVERGENCES = [
    Divergence(
        "repeated_complete_task",
        "A repeated complete_task of a completed task changes nothing here; 0.8.1 sends "
        "step:<slug>:completed again (with the new output) and runs the empty-map cascade "
        "again. A duplicate report must not tell listeners of an output that was not stored.",
        _repeated_complete_task,
    ),
    Divergence(
        "concurrent_start_tasks",
        "start_tasks returns only the tasks this call moved to started; 0.8.1 also returns a "
        "task a concurrent call claimed first, so two workers would run it.",
        _concurrent_start_tasks,
    ),
    Divergence(
        "duplicate_dependency",
        "add_step refuses a dependency listed twice (22023); 0.8.1 counts it twice in "
        "deps_count but records it once, so the step never starts and its runs hang.",
        _duplicate_dependency,
    ),
    Divergence(
        "completed_task_error_message",
        "A completed task carries no error_message; 0.8.1 keeps the one of an earlier failed "
        "attempt, which reads as if the completed task had failed.",
        _completed_task_error_message,
    ),
    Divergence(
        "without_realtime",
        "Without Supabase's realtime.send the functions skip their events; 0.8.1 calls it "
        "unconditionally and fails on a plain PostgreSQL.",
        _without_realtime,
    ),
]


@pytest.mark.parametrize("divergence", DIVERGENCES, ids=lambda d: d.id)
def test_deliberate_divergence(pair: Pair, divergence: Divergence) -> None:
    assert divergence.reason
    divergence.shown_by(pair)
