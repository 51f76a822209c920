"""A TypeScript 0.8.1 worker (the reference PgflowSqlClient) on a conditional flow of ours."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pgflow_kombu.client import Client
from pgflow_kombu.flows import Flow
from tests.reference import node_project
from tests.support.node import node_connection, run_node_script

pytestmark = pytest.mark.node

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "conditional_sql_client.mjs"


def tscond() -> Flow:
    flow = Flow("tscond", max_attempts=1, base_delay=0)
    flow.add_step("pick", if_={"run": {"kind": "a"}})
    flow.add_step("base")
    flow.add_step("boom", when_exhausted="skip")
    flow.add_step("join", depends_on=["pick", "base", "boom"])
    return flow


@pytest.mark.parametrize(
    ("kind", "join_keys"), [("a", ["base", "pick", "run"]), ("b", ["base", "run"])]
)
def test_a_typescript_worker_gets_the_skipping_the_database_decides(
    db_url: str, kind: str, join_keys: list[str]
) -> None:
    client = Client(db_url)
    try:
        assert client.compile_flow(tscond().shape())
        run_id = client.start_flow("tscond", {"kind": kind, "n": 7})
        out = run_node_script(
            node_project(),
            SCRIPT,
            node_connection(db_url),
            "tscond",
            str(run_id),
            str(uuid.uuid4()),
        )
        run = client.get_run_with_states(run_id)
    finally:
        client.close()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert summary["output"] == {"join": join_keys}
    ran = sorted(s["step_slug"] for s in summary["seen"])
    assert ran == sorted(["base", "boom", "join"] + (["pick"] if kind == "a" else []))
    # What the TypeScript side reads: 0.8.1 statuses only; our client shows the skips.
    assert {s["status"] for s in summary["states"]} <= {"created", "started", "completed", "failed"}
    skipped = {s.step_slug: s.skip_reason for s in run.step_states if s.status == "skipped"}
    expected = {"boom": "handler_failed"} | ({} if kind == "a" else {"pick": "condition_unmet"})
    assert skipped == expected
