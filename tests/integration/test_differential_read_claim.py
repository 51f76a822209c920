"""pgflow_kombu.read_and_claim on our schema against pgmq.read + pgflow.start_tasks on pgflow
0.8.1's own schema (npm @pgflow/core), in lockstep.

Each claim must return the same tasks with the same inputs, and leave the same runs, step
states, step tasks, queue messages (read counts, visibility) and realtime events. The flows'
timeouts + 2 s stay within the read's visibility, so our claim extends no message (that
extension is ours: tests/integration/test_read_claim.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.test_differential import define
from tests.reference.driver import WORKER_ID, Pair, assert_same, normalise, reconcile

pytestmark = pytest.mark.node

RUNS = [uuid.UUID(f"{i:08d}-0000-4000-8000-000000000000") for i in range(1, 6)]
FIELDS = ("flow_slug", "run_id", "step_slug", "task_index", "msg_id", "input")


def _tasks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: r[k] for k in FIELDS} for r in rows), key=lambda r: r["msg_id"])


def read_and_claim(pair: Pair, flow: str, qty: int = 100, vt: int = 30) -> list[dict[str, Any]]:
    """One read_and_claim on ours, a read then start_tasks on the reference; same tasks."""
    ours = pair.ours.execute(
        "read_claim_call",
        {"flow_slugs": [flow], "worker_ids": [WORKER_ID], "qty": qty, "read_visibility": vt},
    )
    ids = pair.reference.read(flow, vt=vt, qty=qty)
    reference = (
        pair.reference.call("start_tasks", flow_slug=flow, msg_ids=ids, worker_id=WORKER_ID)
        if ids
        else []
    )
    assert_same(normalise(_tasks(ours)), reconcile(normalise(_tasks(reference))), "claim")
    return _tasks(ours)


def test_a_chain_claimed_in_partial_batches(pair: Pair) -> None:
    define(pair, "chain", [("a", [], {}), ("b", ["a"], {})], timeout=10)
    for run_id in RUNS[:3]:
        pair.call("start_flow", flow_slug="chain", input={"n": str(run_id)}, run_id=run_id)
    first = read_and_claim(pair, "chain", qty=2)
    assert [t["run_id"] for t in first] == RUNS[:2]  # the oldest two, the third left unread
    pair.assert_same_state()
    rest = read_and_claim(pair, "chain", qty=5)
    assert [t["run_id"] for t in rest] == RUNS[2:3]
    for task in first + rest:
        pair.complete(task, {"done": task["step_slug"]})
    second = read_and_claim(pair, "chain")
    assert [(t["step_slug"], t["input"]["a"]) for t in second] == [("b", {"done": "a"})] * 3
    pair.assert_same_state()
    for task in second:
        pair.complete(task, "end")
    state = pair.assert_same_state()
    assert {r["status"] for r in state["runs"]} == {"completed"}


def test_a_root_map_and_its_dependent_map(pair: Pair) -> None:
    define(
        pair,
        "maps",
        [("items", [], {"step_type": "map"}), ("double", ["items"], {"step_type": "map"})],
        timeout=5,
    )
    pair.call("start_flow", flow_slug="maps", input=[1, 2, 3, 4], run_id=RUNS[0])
    items = read_and_claim(pair, "maps", qty=3) + read_and_claim(pair, "maps", qty=3)
    assert [t["input"] for t in items] == [1, 2, 3, 4]
    for task in items:
        pair.complete(task, task["input"] * 10)
    doubles = read_and_claim(pair, "maps")
    assert [t["input"] for t in doubles] == [10, 20, 30, 40]
    pair.assert_same_state()


def test_retries_and_a_message_whose_task_is_already_started(pair: Pair) -> None:
    define(pair, "flaky", [("try", [], {"base_delay": 0})], max_attempts=3, timeout=5)
    pair.call("start_flow", flow_slug="flaky", input={}, run_id=RUNS[0])
    (task,) = read_and_claim(pair, "flaky", vt=20)
    pair.make_visible("flaky")  # its read visibility ran out while the task runs
    assert read_and_claim(pair, "flaky", vt=20) == []  # read again, nothing started
    state = pair.assert_same_state()
    assert state["queues"]["flaky"]["live"][0]["read_ct"] == 2
    pair.fail(task, "boom")
    pair.make_visible("flaky")
    (again,) = read_and_claim(pair, "flaky")
    state = pair.assert_same_state()
    assert state["step_tasks"][0]["attempts_count"] == 2
    pair.complete(again, "ok")
    pair.assert_same_state()


def test_a_failed_run_leaves_its_messages_unclaimed(pair: Pair) -> None:
    define(pair, "brittle", [("x", [], {}), ("y", [], {})], max_attempts=1, timeout=5)
    pair.call("start_flow", flow_slug="brittle", input={}, run_id=RUNS[0])
    x, _y = read_and_claim(pair, "brittle", qty=1) + read_and_claim(pair, "brittle", qty=1)
    pair.fail(x, "fatal")
    pair.make_visible("brittle")
    assert read_and_claim(pair, "brittle") == []
    pair.assert_same_state()
