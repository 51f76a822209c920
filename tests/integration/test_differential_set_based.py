"""The set-based paths on our schema against pgflow 0.8.1's per-row functions on the reference.

Ours starts a batch of runs with ``pgflow_kombu.start_flows`` and reports a batch of tasks with
``pgflow_kombu.report_tasks`` (0090_set_based.sql); the reference schema gets the same work as
per-row calls in one transaction: ``pgflow.start_flow`` per input, and per report (in the
(run_id, step_slug, task_index) order report_tasks promises) the stale check, then
``pgflow.complete_task`` or ``pgflow.fail_task``. Everything observable must match: rows,
counters, live and archived messages with msg_ids and visibility, and the realtime event
sequence; report_tasks's result rows must be what the per-row reports give.
"""

from __future__ import annotations

import queue
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgflow_kombu.db.connect import connect
from tests.reference.driver import WORKER_ID, Db, Pair, assert_same, diagnostics
from tests.support.sql import test_query

pytestmark = pytest.mark.node


def run_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"00000000-0000-4000-8000-{n:012d}")


def define(pair: Pair, flow: str, steps: list[tuple[str, list[str], str]], **opts: Any) -> None:
    pair.call("create_flow", flow_slug=flow, **opts)
    for step, deps, step_type in steps:
        args: dict[str, Any] = {"step_type": step_type}
        if deps:
            args["deps_slugs"] = deps
        pair.call("add_step", flow_slug=flow, step_slug=step, **args)


def start_many(pair: Pair, flow: str, inputs: list[Any], first: int) -> list[uuid.UUID]:
    """start_flows on ours, start_flow per input on the reference (one transaction each)."""
    ids = [run_id(first + i) for i in range(len(inputs))]
    rows = pair.ours.execute(
        "setb_start_flows",
        {"flow_slug": flow, "inputs": [Jsonb(v) for v in inputs], "run_ids": ids},
    )
    assert [(r["ordinal"], r["run_id"]) for r in rows] == list(enumerate(ids, 1))
    with pair.reference.conn.transaction():
        for value, rid in zip(inputs, ids, strict=True):
            pair.reference.call("start_flow", flow_slug=flow, input=value, run_id=rid)
    return ids


def report(task: dict[str, Any], output: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": str(task["run_id"]),
        "step_slug": task["step_slug"],
        "task_index": task["task_index"],
        "attempt": 1,
        "worker_id": str(WORKER_ID),
        "output": output,
        **extra,
    }


def report_per_row(db: Db, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What report_tasks does row by row, with pgflow's own functions, in one transaction."""
    order = sorted(
        range(len(reports)),
        key=lambda i: (
            uuid.UUID(reports[i]["run_id"]),
            reports[i]["step_slug"],
            reports[i]["task_index"],
            i,
        ),
    )
    rows: list[dict[str, Any]] = []
    with db.conn.transaction():
        for i in order:
            r = reports[i]
            key = {k: r[k] for k in ("run_id", "step_slug", "task_index")}
            (before,) = db.execute("setb_run_status", {"run_id": r["run_id"]})
            state = db.execute("setb_task_state", key)
            row: dict[str, Any] = {"ordinal": i + 1, "detail": None, "retrying": None}
            task = state[0] if state else None
            if (
                task is None
                or task["status"] != "started"
                or task["attempts_count"] != r["attempt"]
                or str(task["last_worker_id"]) != r["worker_id"]
            ):
                row["outcome"] = "stale"
                row["detail"] = (
                    f"{task['status']} attempt {task['attempts_count']}"
                    if task
                    else "missing attempt -"
                )
                row["run_status"] = None
                rows.append(row)
                continue
            if "error" in r:
                db.call("fail_task", error_message=r["error"], **key)
                row["outcome"] = "failed"
                row["retrying"] = db.execute("setb_task_state", key)[0]["status"] == "queued"
            else:
                db.call("complete_task", output=r["output"], **key)
                row["outcome"] = "completed"
            (after,) = db.execute("setb_run_status", {"run_id": r["run_id"]})
            row["run_status"] = after["status"] if after["status"] != before["status"] else None
            rows.append(row)
    return sorted(rows, key=lambda row: row["ordinal"])


SET_FUNCTIONS = ["complete_tasks_set", "retry_tasks_set"]


def report_both(
    pair: Pair, reports: list[dict[str, Any]], *, by_set: bool = True
) -> list[dict[str, Any]]:
    """report_tasks on ours, per row on the reference; the result rows must match. by_set: ours
    took the set path (complete_tasks_set, retry_tasks_set) at least once, else never."""
    with pair.ours.conn.transaction():
        pair.ours.execute("setb_track_functions")
        ours = pair.ours.execute("setb_report_tasks", {"reports": Jsonb(reports)})
        (calls,) = pair.ours.execute("setb_function_calls", {"names": SET_FUNCTIONS})
    assert (calls["calls"] >= 1) == by_set, f"complete_tasks_set called {calls['calls']} times"
    expected = report_per_row(pair.reference, reports)
    assert_same(ours, expected, "report_tasks")
    return ours


def output_of(task: dict[str, Any]) -> Any:
    return {"step": task["step_slug"], "i": task["task_index"], "in": task["input"]}


def drain(pair: Pair, flow: str, batch: int, outputs: Any = output_of) -> int:
    """Claim and report every task of the flow in batches of ``batch``; rounds taken."""
    rounds = 0
    while tasks := pair.claim(flow):
        rounds += 1
        for start in range(0, len(tasks), batch):
            chunk = tasks[start : start + batch]
            rows = report_both(pair, [report(t, outputs(t)) for t in chunk])
            assert {r["outcome"] for r in rows} == {"completed"}
        pair.assert_same_state()
    return rounds


def test_start_many_then_batches_on_chains_and_diamonds(pair: Pair) -> None:
    define(pair, "chain", [("a", [], "single"), ("b", ["a"], "single"), ("c", ["b"], "single")])
    define(
        pair,
        "diamond",
        [
            ("root", [], "single"),
            ("right", ["root"], "single"),
            ("left", ["root"], "single"),
            ("join", ["left", "right"], "single"),
            ("other", [], "single"),
        ],
    )
    start_many(pair, "chain", [{"n": i} for i in range(5)], first=1)
    start_many(pair, "diamond", [{"d": i} for i in range(4)], first=100)
    state = pair.assert_same_state()
    assert len(state["runs"]) == 9
    assert drain(pair, "chain", batch=3) == 3
    assert drain(pair, "diamond", batch=5) == 3
    state = pair.assert_same_state()
    assert {r["status"] for r in state["runs"]} == {"completed"}
    finished = [e["topic"] for e in pair.ours.events() if e["event"] == "run:completed"]
    assert sorted(finished) == sorted(f"pgflow:run:{r['run_id']}" for r in state["runs"])


def test_batch_events_interleave_as_per_row_calls(pair: Pair) -> None:
    # One batch completes a and b of each run: per row, a's dependent z starts before b
    # completes, so events and msg_ids follow (run, completing task), not step_slug order.
    define(
        pair,
        "cross",
        [("a", [], "single"), ("b", [], "single"), ("z", ["a"], "single"), ("c", ["b"], "single")],
    )
    start_many(pair, "cross", [{"k": 1}, {"k": 2}], first=1)
    tasks = pair.claim("cross")
    report_both(pair, [report(t, {"t": t["step_slug"]}) for t in reversed(tasks)])
    state = pair.assert_same_state()
    events = [e["event"] for e in pair.ours.events() if e["topic"].endswith(str(run_id(1)))]
    assert events == [
        "run:started",
        "step:a:started",
        "step:b:started",
        "step:a:completed",
        "step:z:started",
        "step:b:completed",
        "step:c:started",
    ]
    live = [m["message"]["step_slug"] for m in state["queues"]["cross"]["live"]]
    assert live == ["z", "c", "z", "c"]
    drain(pair, "cross", batch=10)


def test_root_maps_with_empty_arrays_among_the_runs(pair: Pair) -> None:
    define(pair, "rootmap", [("each", [], "map"), ("sum", ["each"], "single")])
    start_many(pair, "rootmap", [[1, 2], [], [3], [], [], [4, 5, 6]], first=1)
    state = pair.assert_same_state()
    assert [r["status"] for r in state["runs"]].count("started") == 6
    assert drain(pair, "rootmap", batch=4) == 2
    state = pair.assert_same_state()
    assert {r["status"] for r in state["runs"]} == {"completed"}


def test_dependent_maps_mixed_with_taskless_and_type_violations(pair: Pair) -> None:
    define(
        pair,
        "depmap",
        [
            ("fetch", [], "single"),
            ("each", ["fetch"], "map"),
            ("again", ["each"], "map"),
            ("sum", ["again"], "single"),
        ],
    )
    lists: list[Any] = [[1, 2], [], [3], {"no": "array"}, [4], [], [5, 6, 7]]
    ids = start_many(pair, "depmap", [{"r": i} for i in range(len(lists))], first=1)
    fetches = pair.claim("depmap")
    by_run = dict(zip(ids, lists, strict=True))
    rows = report_both(pair, [report(t, by_run[t["run_id"]]) for t in fetches])
    assert [r["run_status"] for r in rows] == [None, None, None, "failed", None, None, None]
    state = pair.assert_same_state()
    assert [r["status"] for r in state["runs"]].count("failed") == 1
    drain(pair, "depmap", batch=3)
    state = pair.assert_same_state()
    assert [r["status"] for r in state["runs"]].count("completed") == 6


def test_mixed_batch_stale_twice_failed_run_and_retries(pair: Pair) -> None:
    define(
        pair,
        "mixed",
        [("a", [], "single"), ("b", [], "single"), ("m", [], "map"), ("z", ["a", "m"], "single")],
        max_attempts=2,
        base_delay=7,
    )
    ids = start_many(pair, "mixed", [[1, 2], [3], [4, 5]], first=1)
    tasks = pair.claim("mixed")
    by = {(t["run_id"], t["step_slug"], t["task_index"]): t for t in tasks}
    # Run 3 fails before the batch: b fails twice (the second attempt is its last).
    b3 = by[(ids[2], "b", 0)]
    pair.fail(b3, "first")
    pair.make_visible("mixed")
    (again,) = pair.claim("mixed")
    pair.fail(again, "second")
    pair.assert_same_state()

    reports = [
        report(by[(ids[0], "a", 0)], {"a": 1}),
        report(by[(ids[0], "a", 0)], {"a": "twice"}),  # the same attempt again: stale
        report(by[(ids[0], "m", 1)], "m1"),
        report(by[(ids[0], "m", 0)], "m0"),
        report(by[(ids[1], "b", 0)], error="boom"),  # retried: run 2 goes per row
        report(by[(ids[1], "a", 0)], [9]),
        report(by[(ids[1], "m", 0)], "x", attempt=5),  # not this attempt: stale
        report(by[(ids[2], "a", 0)], "late"),  # its run failed meanwhile
        report(by[(ids[2], "m", 0)], "late"),
    ]
    rows = report_both(pair, reports)
    assert [r["outcome"] for r in rows] == [
        "completed",
        "stale",
        "completed",
        "completed",
        "failed",
        "completed",
        "stale",
        "completed",
        "completed",
    ]
    assert rows[1]["detail"] == "completed attempt 1"
    assert rows[4]["retrying"] is True
    state = pair.assert_same_state()
    (retried,) = [
        m
        for m in state["queues"]["mixed"]["live"]
        if m["message"]["run_id"] == str(ids[1]) and m["message"]["step_slug"] == "b"
    ]
    assert retried["visible_in"] > 5  # the retry's backoff
    drain(pair, "mixed", batch=4)


def test_many_runs_in_batches_across_runs(pair: Pair) -> None:
    define(pair, "many", [("a", [], "single"), ("b", ["a"], "map"), ("c", ["b"], "single")])
    start_many(pair, "many", [{"n": i} for i in range(40)], first=1)
    rounds = drain(
        pair,
        "many",
        batch=7,
        outputs=lambda t: [1, 2] if t["step_slug"] == "a" else t["task_index"],
    )
    assert rounds == 3
    state = pair.assert_same_state()
    assert {r["status"] for r in state["runs"]} == {"completed"}
    assert state["runs"][0]["output"] == {"c": 0}


def test_start_flows_refuses_bad_input_like_the_first_failing_start_flow(pair: Pair) -> None:
    define(pair, "bad", [("each", [], "map")])
    inputs = [[1], [2], {"not": "array"}, [3]]
    with pytest.raises(psycopg.Error) as ours:
        pair.ours.execute(
            "setb_start_flows",
            {"flow_slug": "bad", "inputs": [Jsonb(v) for v in inputs], "run_ids": None},
        )
    with pytest.raises(psycopg.Error) as ref, pair.reference.conn.transaction():
        for value in inputs:
            pair.reference.call("start_flow", flow_slug="bad", input=value)
    assert diagnostics(ours.value) == diagnostics(ref.value)
    assert pair.assert_same_state()["runs"] == []


def test_concurrent_batches_on_overlapping_runs(pair: Pair) -> None:
    """Two report_tasks at once on the same runs: the second waits, neither deadlocks, and
    the result is the per-row result of one batch after the other."""
    define(pair, "fan", [("each", [], "map"), ("sum", ["each"], "single")])
    start_many(pair, "fan", [[1, 2, 3, 4]] * 6, first=1)
    tasks = pair.claim("fan")
    low = [report(t, t["input"]) for t in tasks if t["task_index"] < 2]
    high = [report(t, t["input"]) for t in reversed(tasks) if t["task_index"] >= 2]

    results: dict[str, list[Any]] = {}
    errors: list[BaseException] = []
    first_done = threading.Event()

    def hold_first() -> None:
        try:
            with connect(pair.ours.url) as conn, conn.transaction():
                results["low"] = conn.execute(
                    test_query("setb_report_tasks"), {"reports": Jsonb(low)}
                ).fetchall()
                first_done.set()
                waiter_pid = pids.get(timeout=30)
                for _ in range(300):
                    row = conn.execute(
                        test_query("setb_waiting_on_lock"), {"pid": waiter_pid}
                    ).fetchone()
                    if row and row[0]:
                        break
                    threading.Event().wait(0.02)
                else:
                    raise AssertionError("the second batch never waited for the first")
        except BaseException as exc:
            errors.append(exc)
            first_done.set()

    def second() -> None:
        try:
            first_done.wait(30)
            with connect(pair.ours.url) as conn:
                pids.put(conn.info.backend_pid)
                results["high"] = conn.execute(
                    test_query("setb_report_tasks"), {"reports": Jsonb(high)}
                ).fetchall()
        except BaseException as exc:
            errors.append(exc)

    pids: queue.Queue[int] = queue.Queue()
    threads = [threading.Thread(target=hold_first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    columns = ("ordinal", "outcome", "detail", "retrying", "run_status")
    for name, batch in (("low", low), ("high", high)):
        expected = report_per_row(pair.reference, batch)
        assert expected == [dict(zip(columns, row, strict=True)) for row in results[name]]
    assert {row[1] for row in results["low"] + results["high"]} == {"completed"}
    pair.assert_same_state()
    drain(pair, "fan", batch=6)


def test_batches_of_failures_retry_with_backoff_or_fail_the_run(pair: Pair) -> None:
    define(
        pair, "flaky", [("a", [], "single"), ("b", ["a"], "single")], max_attempts=2, base_delay=3
    )
    ids = start_many(pair, "flaky", [{"n": i} for i in range(6)], first=1)
    first = pair.claim("flaky")
    rows = report_both(pair, [report(t, error=f"boom {t['run_id']}") for t in first])
    assert [(r["outcome"], r["retrying"]) for r in rows] == [("failed", True)] * 6
    state = pair.assert_same_state()
    assert {t["status"] for t in state["step_tasks"]} == {"queued"}
    assert all(5 < m["visible_in"] <= 6 for m in state["queues"]["flaky"]["live"])  # 3 * 2^1

    pair.make_visible("flaky")
    second = pair.claim("flaky")
    # Runs 1-3 fail for good (their last attempt), runs 4-6 complete and go on.
    reports = [
        report(t, {"ok": 1}, attempt=2)
        if t["run_id"] in ids[3:]
        else report(t, error="again", attempt=2)
        for t in second
    ]
    rows = report_both(pair, reports)
    assert [r["run_status"] for r in rows] == ["failed"] * 3 + [None] * 3
    state = pair.assert_same_state()
    assert [r["status"] for r in state["runs"]] == ["failed"] * 3 + ["started"] * 3
    drain(pair, "flaky", batch=6)
