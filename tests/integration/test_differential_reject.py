"""A task failed for good (pgflow_kombu.reject_task) against the reference pgflow 0.8.1 failing
the same task on its last attempt: everything observable must be the same.

Ours defines the step with 3 attempts and rejects the first; the reference defines it with 1 and
fails it: runs, step states, step tasks (attempts_count 1 on both), queue messages and realtime
events must match, before and after.
"""

from __future__ import annotations

import uuid

import pytest

from tests.reference.driver import Pair

pytestmark = pytest.mark.node

RUN = uuid.UUID("33333333-3333-4333-8333-333333333333")


def test_reject_task_is_pgflows_final_failure_on_the_first_attempt(pair: Pair) -> None:
    for db, attempts in ((pair.ours, 3), (pair.reference, 1)):
        db.call("create_flow", flow_slug="pay", max_attempts=3, base_delay=0)
        db.call("add_step", flow_slug="pay", step_slug="charge", max_attempts=attempts)
        db.call("add_step", flow_slug="pay", step_slug="audit")
        db.call("add_step", flow_slug="pay", step_slug="notify", deps_slugs=["charge"])
    pair.call("start_flow", flow_slug="pay", input={"card": 1}, run_id=RUN)
    charge, audit = sorted(pair.claim("pay"), key=lambda t: t["step_slug"], reverse=True)
    assert charge["step_slug"] == "charge"
    pair.assert_same_state()

    pair.ours.execute(
        "limits_reject_task",
        {
            "run_id": charge["run_id"],
            "step_slug": "charge",
            "task_index": 0,
            "error_message": "CardDeclined: no funds",
        },
    )
    pair.reference.call(
        "fail_task",
        run_id=charge["run_id"],
        step_slug="charge",
        task_index=0,
        error_message="CardDeclined: no funds",
    )
    state = pair.assert_same_state()
    assert state["runs"][0]["status"] == "failed"
    tasks = {t["step_slug"]: t for t in state["step_tasks"]}
    assert (tasks["charge"]["status"], tasks["charge"]["attempts_count"]) == ("failed", 1)
    assert [e["event"] for e in pair.ours.events()][-2:] == ["step:charge:failed", "run:failed"]

    # The other running task of the failed run: a late failure fails it alone, on both.
    pair.fail(audit, "late")
    pair.assert_same_state()
