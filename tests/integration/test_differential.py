"""Our pgflow schema against the reference pgflow 0.8.1 schema (npm @pgflow/core), call by call.

Every scenario runs the same calls on both databases in lockstep; each call's result and, at
checkpoints, everything a user or worker can observe (runs, step states, step tasks, live and
archived queue messages with their visibility, the realtime event sequence) must be the same.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.sql_bad_input import map_chain
from tests.reference.driver import Pair, assert_same, normalise

pytestmark = pytest.mark.node

RUN = uuid.UUID("11111111-1111-4111-8111-111111111111")
RUN2 = uuid.UUID("22222222-2222-4222-8222-222222222222")


def define(
    pair: Pair, flow: str, steps: list[tuple[str, list[str], dict[str, Any]]], **opts: Any
) -> None:
    pair.call("create_flow", flow_slug=flow, **opts)
    for step, deps, step_opts in steps:
        args = dict(step_opts)
        if deps:
            args["deps_slugs"] = deps
        pair.call("add_step", flow_slug=flow, step_slug=step, **args)


def events(pair: Pair) -> list[str]:
    return [e["event"] for e in pair.ours.events()]


def test_linear_chain(pair: Pair) -> None:
    define(pair, "chain", [("a", [], {}), ("b", ["a"], {}), ("c", ["b"], {})])
    pair.call("start_flow", flow_slug="chain", input={"n": 1}, run_id=RUN)
    pair.assert_same_state()

    (a,) = pair.claim("chain")
    assert a["input"] == {"run": {"n": 1}}
    pair.complete(a, {"a": 1})
    (b,) = pair.claim("chain")
    assert b["input"] == {"run": {"n": 1}, "a": {"a": 1}}
    pair.assert_same_state()
    pair.complete(b, [1, 2])
    (c,) = pair.claim("chain")
    assert c["input"] == {"run": {"n": 1}, "b": [1, 2]}
    pair.complete(c, "done")

    state = pair.assert_same_state()
    assert state["runs"][0]["status"] == "completed"
    assert state["runs"][0]["output"] == {"c": "done"}
    assert events(pair) == [
        "run:started",
        "step:a:started",
        "step:a:completed",
        "step:b:started",
        "step:b:completed",
        "step:c:started",
        "step:c:completed",
        "run:completed",
    ]


def test_diamond_starts_siblings_in_slug_order(pair: Pair) -> None:
    define(
        pair,
        "diamond",
        [
            ("root", [], {}),
            ("right", ["root"], {}),
            ("left", ["root"], {}),
            ("join", ["left", "right"], {}),
        ],
    )
    pair.call("start_flow", flow_slug="diamond", input={"x": 2}, run_id=RUN)
    (root,) = pair.claim("diamond")
    pair.complete(root, {"r": 1})
    left, right = pair.claim("diamond")
    assert (left["step_slug"], right["step_slug"]) == ("left", "right")  # msg_ids in slug order
    pair.complete(right, "R")
    pair.assert_same_state()
    pair.complete(left, "L")
    (join,) = pair.claim("diamond")
    assert join["input"] == {"run": {"x": 2}, "left": "L", "right": "R"}
    pair.complete(join, None)  # SQL NULL output

    state = pair.assert_same_state()
    assert state["runs"][0]["output"] == {"join": None}
    assert events(pair)[3:6] == ["step:left:started", "step:right:started", "step:right:completed"]


def test_root_map(pair: Pair) -> None:
    define(pair, "rootmap", [("each", [], {"step_type": "map"}), ("sum", ["each"], {})])
    pair.call("start_flow", flow_slug="rootmap", input=[10, {"b": 2}, None], run_id=RUN)
    pair.assert_same_state()
    tasks = pair.claim("rootmap")
    assert [t["input"] for t in tasks] == [10, {"b": 2}, None]
    for task in reversed(tasks):
        pair.complete(task, {"i": task["task_index"]})
    (total,) = pair.claim("rootmap")
    assert total["input"] == {"run": [10, {"b": 2}, None], "each": [{"i": 0}, {"i": 1}, {"i": 2}]}
    pair.complete(total, 3)
    state = pair.assert_same_state()
    assert state["runs"][0]["output"] == {"sum": 3}


def test_dependent_map_with_map_leaf(pair: Pair) -> None:
    define(
        pair,
        "depmap",
        [("fetch", [], {}), ("each", ["fetch"], {"step_type": "map"}), ("other", [], {})],
    )
    pair.call("start_flow", flow_slug="depmap", input={"q": 1}, run_id=RUN)
    fetch, other = pair.claim("depmap")
    pair.complete(fetch, ["a", "b"])
    pair.assert_same_state()
    tasks = pair.claim("depmap")
    assert [(t["step_slug"], t["input"]) for t in tasks] == [("each", "a"), ("each", "b")]
    pair.complete(tasks[1], "B")
    pair.complete(other, {"o": True})
    pair.complete(tasks[0], "A")
    state = pair.assert_same_state()
    assert state["runs"][0]["output"] == {"each": ["A", "B"], "other": {"o": True}}


def test_map_of_map(pair: Pair) -> None:
    define(
        pair,
        "mapmap",
        [
            ("outer", [], {"step_type": "map"}),
            ("inner", ["outer"], {"step_type": "map"}),
            ("last", ["inner"], {}),
        ],
    )
    pair.call("start_flow", flow_slug="mapmap", input=[1, 2, 3], run_id=RUN)
    outer = pair.claim("mapmap")
    pair.complete(outer[0], {"v": 10})
    pair.complete(outer[2], None)
    pair.complete(outer[1], [20])
    inner = pair.claim("mapmap")
    assert [t["input"] for t in inner] == [{"v": 10}, [20], None]
    for task in inner:
        pair.complete(task, task["task_index"])
    (last,) = pair.claim("mapmap")
    assert last["input"] == {"run": [1, 2, 3], "inner": [0, 1, 2]}
    pair.complete(last, "ok")
    pair.assert_same_state()


def test_empty_root_map_cascades_at_start(pair: Pair) -> None:
    define(
        pair,
        "empty",
        [
            ("each", [], {"step_type": "map"}),
            ("again", ["each"], {"step_type": "map"}),
            ("side", [], {"step_type": "map"}),
            ("after", ["again"], {}),
        ],
    )
    pair.call("start_flow", flow_slug="empty", input=[], run_id=RUN)
    pair.assert_same_state()
    (after,) = pair.claim("empty")
    assert after["input"] == {"run": [], "again": []}
    pair.complete(after, {"done": True})
    state = pair.assert_same_state()
    assert state["runs"][0]["output"] == {"after": {"done": True}, "side": []}
    assert events(pair)[:5] == [
        "run:started",
        "step:each:completed",
        "step:side:completed",
        "step:again:completed",
        "step:after:started",
    ]


def test_taskless_flow_completes_inside_start_flow(pair: Pair) -> None:
    define(
        pair,
        "allempty",
        [("each", [], {"step_type": "map"}), ("more", ["each"], {"step_type": "map"})],
    )
    (run,) = pair.call("start_flow", flow_slug="allempty", input=[], run_id=RUN)
    assert run["status"] == "completed"
    assert run["output"] == {"more": []}
    pair.assert_same_state()


def test_cascade_of_49_taskless_steps_completes(pair: Pair) -> None:
    # One pass short of 0.8.1's safety limit (50 fail: test_differential_errors).
    for function, args in map_chain("deep", 49):
        pair.call(function, **args)
    (run,) = pair.call("start_flow", flow_slug="deep", input=[], run_id=RUN)
    assert (run["status"], run["output"]) == ("completed", {"m48": []})
    pair.assert_same_state()


def test_flow_without_steps_completes_with_null_output(pair: Pair) -> None:
    pair.call("create_flow", flow_slug="nothing")
    (run,) = pair.call("start_flow", flow_slug="nothing", input={"a": 1}, run_id=RUN)
    assert (run["status"], run["output"], run["remaining_steps"]) == ("completed", None, 0)
    pair.assert_same_state()
    assert events(pair) == ["run:started", "run:completed"]


def test_empty_dependent_map_cascades_on_completion(pair: Pair) -> None:
    define(
        pair,
        "emptydep",
        [
            ("list", [], {}),
            ("each", ["list"], {"step_type": "map"}),
            ("again", ["each"], {"step_type": "map"}),
            ("report", ["again", "list"], {}),
        ],
    )
    pair.call("start_flow", flow_slug="emptydep", input={}, run_id=RUN)
    (lst,) = pair.claim("emptydep")
    pair.complete(lst, [])
    pair.assert_same_state()
    (report,) = pair.claim("emptydep")
    assert report["input"] == {"run": {}, "again": [], "list": []}
    pair.complete(report, "r")
    pair.assert_same_state()


def test_type_violation_fails_the_run_at_once(pair: Pair) -> None:
    define(
        pair,
        "typed",
        [
            ("produce", [], {}),
            ("each", ["produce"], {"step_type": "map"}),
            ("slow", [], {}),
            ("waiting", [], {"start_delay": 100}),
        ],
    )
    pair.call("start_flow", flow_slug="typed", input={}, run_id=RUN)
    produce, slow = pair.claim("typed")
    assert pair.complete(produce, {"not": "an array"}) == []
    state = pair.assert_same_state()
    assert state["runs"][0]["status"] == "failed"
    tasks = {t["step_slug"]: t for t in state["step_tasks"]}
    assert tasks["produce"]["error_message"] == "[TYPE_VIOLATION] Produced object instead of array"
    assert tasks["produce"]["output"] == {"not": "an array"}
    steps = {s["step_slug"]: s for s in state["step_states"]}
    assert steps["produce"]["error_message"] == (
        "[TYPE_VIOLATION] Map step each expects array input but dependency produce produced object"
    )
    assert state["queues"]["typed"]["live"] == []  # started and delayed messages archived
    assert events(pair)[-2:] == ["run:failed", "step:produce:failed"]
    assert "error_message" not in pair.ours.events()[-2]["payload"]

    # The run is failed: late reports change nothing but the late task and its message.
    pair.complete(slow, {"late": True})
    pair.fail(slow, "late failure")
    pair.assert_same_state()


def test_type_violation_is_checked_before_the_task_status(pair: Pair) -> None:
    define(pair, "typed2", [("produce", [], {}), ("each", ["produce"], {"step_type": "map"})])
    pair.call("start_flow", flow_slug="typed2", input={}, run_id=RUN)
    # The task is still queued (never started): a null output still fails the run.
    task = {"run_id": RUN, "step_slug": "produce", "task_index": 0}
    assert pair.complete(task, None) == []
    state = pair.assert_same_state()
    assert (
        state["step_tasks"][0]["error_message"] == "[TYPE_VIOLATION] Produced null instead of array"
    )


def test_retry_with_backoff_then_success(pair: Pair) -> None:
    define(
        pair, "retry", [("flaky", [], {"base_delay": 3}), ("next", ["flaky"], {})], max_attempts=3
    )
    pair.call("start_flow", flow_slug="retry", input={}, run_id=RUN)
    (task,) = pair.claim("retry")
    (row,) = pair.fail(task, "boom 1")
    assert (row["status"], row["attempts_count"], row["error_message"]) == ("queued", 1, "boom 1")
    state = pair.assert_same_state()
    (message,) = state["queues"]["retry"]["live"]
    assert 5.0 <= message["visible_in"] <= 6.0  # floor(3 * 2^1) seconds
    assert pair.read("retry") == []

    pair.make_visible("retry")
    (task,) = pair.claim("retry")
    (row,) = pair.fail(task, "boom 2")
    state = pair.assert_same_state()
    assert 11.0 <= state["queues"]["retry"]["live"][0]["visible_in"] <= 12.0  # floor(3 * 2^2)

    pair.make_visible("retry")
    (task,) = pair.claim("retry")
    (row,) = pair.complete(task, "third time")
    # The earlier error is gone (0.8.1 keeps it: a deliberate difference, reconciled by Pair).
    assert (row["status"], row["attempts_count"], row["error_message"]) == ("completed", 3, None)
    (nxt,) = pair.claim("retry")
    assert nxt["input"] == {"run": {}, "flaky": "third time"}
    pair.assert_same_state()


def test_retries_exhausted_fail_step_and_run_and_archive_messages(pair: Pair) -> None:
    define(
        pair,
        "doomed",
        [
            ("bad", [], {"max_attempts": 2, "base_delay": 0}),
            ("good", [], {}),
            ("queued_map", [], {"step_type": "map", "start_delay": 60}),
            ("never", ["bad"], {}),
        ],
    )
    pair.call("start_flow", flow_slug="doomed", input=[1, 2], run_id=RUN)
    bad, good = pair.claim("doomed")
    pair.fail(bad, "first")
    (bad,) = pair.claim("doomed")  # base_delay 0: visible again at once
    (row,) = pair.fail(bad, "second")
    assert (row["status"], row["attempts_count"]) == ("failed", 2)

    state = pair.assert_same_state()
    assert state["runs"][0]["status"] == "failed"
    steps = {s["step_slug"]: s for s in state["step_states"]}
    assert (steps["bad"]["status"], steps["bad"]["error_message"]) == ("failed", "second")
    assert state["queues"]["doomed"]["live"] == []
    assert len(state["queues"]["doomed"]["archived"]) == 4
    assert events(pair)[-2:] == ["step:bad:failed", "run:failed"]

    # A failed run ignores late completions, and a late failure only fails its own task.
    (row,) = pair.complete(good, {"late": True})
    assert row["status"] == "started"
    (row,) = pair.fail(good, "late")
    assert row["status"] == "failed"
    pair.assert_same_state()
    assert pair.read("doomed") == []


def test_start_delay_applies_to_the_first_send_only(pair: Pair) -> None:
    define(
        pair,
        "delayed",
        [("first", [], {"start_delay": 30}), ("second", ["first"], {"start_delay": 7})],
        base_delay=1,
    )
    pair.call("start_flow", flow_slug="delayed", input={}, run_id=RUN)
    state = pair.assert_same_state()
    assert 29.0 <= state["queues"]["delayed"]["live"][0]["visible_in"] <= 30.0
    assert pair.read("delayed") == []
    pair.make_visible("delayed")
    (first,) = pair.claim("delayed")
    pair.fail(first, "retry me")
    state = pair.assert_same_state()
    assert 1.0 <= state["queues"]["delayed"]["live"][0]["visible_in"] <= 2.0  # backoff, not 30
    pair.make_visible("delayed")
    (first,) = pair.claim("delayed")
    pair.complete(first, 1)
    state = pair.assert_same_state()
    assert 6.0 <= state["queues"]["delayed"]["live"][0]["visible_in"] <= 7.0


def test_start_flow_with_and_without_a_run_id(pair: Pair) -> None:
    define(pair, "ids", [("only", [], {})])
    (run,) = pair.call("start_flow", flow_slug="ids", input={"k": "v"}, run_id=RUN)
    assert run["run_id"] == RUN
    for db in pair.both:
        (fresh,) = db.call("start_flow", flow_slug="ids", input={"k": "w"})
        assert fresh["run_id"] not in (RUN, None)
        assert fresh["remaining_steps"] == 1


def test_two_runs_of_one_flow_share_the_queue(pair: Pair) -> None:
    define(pair, "shared", [("a", [], {}), ("b", ["a"], {})])
    pair.call("start_flow", flow_slug="shared", input={"r": 1}, run_id=RUN)
    pair.call("start_flow", flow_slug="shared", input={"r": 2}, run_id=RUN2)
    first, second = pair.claim("shared")
    pair.complete(second, 2)
    pair.complete(first, 1)
    for task in pair.claim("shared"):
        pair.complete(task, {"from": str(task["run_id"])})
    pair.assert_same_state()


def test_state_helpers(pair: Pair) -> None:
    define(pair, "helpers", [("a", [], {}), ("b", ["a"], {})])
    for name, args in (
        ("start_flow_with_states", {"flow_slug": "helpers", "input": {"z": 1}, "run_id": RUN}),
        ("get_run_with_states", {"run_id": RUN}),
    ):
        documents = [db.call(name, **args)[0][name] for db in pair.both]
        for document in documents:
            document["steps"].sort(key=lambda s: s["step_slug"])
        assert_same(normalise(documents[0]), normalise(documents[1]), name)
        assert [s["step_slug"] for s in documents[0]["steps"]] == ["a", "b"]
    assert pair.ours.call("get_run_with_states", run_id=RUN2)[0]["get_run_with_states"] is None

    msg_ids = pair.read("helpers", vt=1)
    rows = pair.call("set_vt_batch", queue_name="helpers", msg_ids=msg_ids, vt_offsets=[45])
    assert [r["msg_id"] for r in rows] == msg_ids
    state = pair.assert_same_state()
    assert 44.0 <= state["queues"]["helpers"]["live"][0]["visible_in"] <= 45.0
    assert pair.call("set_vt_batch", queue_name="helpers", msg_ids=[], vt_offsets=[]) == []
    assert pair.call("poll_for_tasks", queue_name="helpers", vt=1, qty=1) == []


def test_fail_task_on_a_queued_task_only_delays_its_message(pair: Pair) -> None:
    # A quirk of 0.8.1 kept as is: the backoff is applied although the task was never started.
    define(pair, "notstarted", [("a", [], {})], base_delay=4)
    pair.call("start_flow", flow_slug="notstarted", input={}, run_id=RUN)
    (row,) = pair.fail({"run_id": RUN, "step_slug": "a", "task_index": 0}, "not mine")
    assert (row["status"], row["attempts_count"], row["error_message"]) == ("queued", 0, None)
    state = pair.assert_same_state()
    assert 3.0 <= state["queues"]["notstarted"]["live"][0]["visible_in"] <= 4.0  # floor(4 * 2^0)


def test_unknown_run_or_task_returns_nothing(pair: Pair) -> None:
    define(pair, "ghost", [("a", [], {})])
    pair.call("start_flow", flow_slug="ghost", input={}, run_id=RUN)
    ghost = {"run_id": RUN2, "step_slug": "a", "task_index": 0}
    assert pair.complete(ghost, 1) == []
    assert pair.fail(ghost, "x") == []
    assert pair.start_tasks("ghost", [12345]) == []
    pair.assert_same_state()


def test_start_tasks_leaves_message_visibility_alone(pair: Pair) -> None:
    # Kept as in 0.8.1: start_tasks computes timeout + 2 s but never applies it, so a claimed
    # task is protected only by the visibility its reader asked for (here 5 s, not 62 s).
    define(pair, "vis", [("a", [], {})])
    pair.call("start_flow", flow_slug="vis", input={}, run_id=RUN)
    pair.claim("vis", vt=5)
    state = pair.assert_same_state()
    assert 4.0 <= state["queues"]["vis"]["live"][0]["visible_in"] <= 5.0


def test_mixed_case_flow_slug(pair: Pair) -> None:
    # pgmq lowercases queue table names: the queue of "OrderFlow" is pgmq.q_orderflow.
    define(pair, "OrderFlow", [("Fetch", [], {}), ("Each", ["Fetch"], {"step_type": "map"})])
    pair.call("start_flow", flow_slug="OrderFlow", input={}, run_id=RUN)
    (fetch,) = pair.claim("OrderFlow")
    pair.complete(fetch, [1, 2])
    for task in pair.claim("OrderFlow"):
        pair.complete(task, task["input"])
    state = pair.assert_same_state()
    assert state["runs"][0]["output"] == {"Each": [1, 2]}
