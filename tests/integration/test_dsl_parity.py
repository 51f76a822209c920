"""Flows defined in Python compile to the same pgflow rows as the same flows in @pgflow/dsl 0.8.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from pgflow_kombu import PgFlow
from pgflow_kombu.db.connect import connect
from tests.support.databases import clone_database, drop
from tests.support.node import npm_project, run_node_script
from tests.support.sql import test_query

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "compile_dsl_flows.mjs"

pytestmark = pytest.mark.node


def python_flows(app: PgFlow) -> None:
    """The flows of compile_dsl_flows.mjs, written with our API."""
    linear = app.flow("dsl_linear", max_attempts=5, timeout=30)

    @linear.step
    def fetch(run: Any) -> Any:
        return run

    @linear.step(max_attempts=2)
    def parse(fetch: Any) -> Any:
        return fetch

    @linear.step(start_delay=3, base_delay=7)
    def save(parse: Any) -> Any:
        return parse

    diamond = app.flow("dsl_diamond")

    @diamond.step
    def root(run: Any) -> Any:
        return run

    @diamond.step
    def left(root: Any) -> Any:
        return root

    @diamond.step(timeout=10)
    def right(root: Any) -> Any:
        return root

    @diamond.step
    def join(left: Any, right: Any) -> Any:
        return [left, right]

    mapped = app.flow("dsl_map", base_delay=2)

    @mapped.map
    def each_url(url: Any) -> Any:
        return url

    @mapped.map(over="each_url", max_attempts=4)
    def each_len(x: Any) -> Any:
        return x

    @mapped.step
    def total(each_len: Any) -> Any:
        return each_len


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with connect(url) as conn:
        return {
            name: conn.execute(test_query(f"parity_{name}")).fetchall()
            for name in ("flows", "steps", "deps")
        }


@pytest.fixture
def second_db_url(pg_admin_url: str, schema_template: str) -> Iterator[str]:
    url = clone_database(pg_admin_url, schema_template, prefix="dsl")
    yield url
    drop(pg_admin_url, url)


def test_python_flows_match_the_typescript_dsl(db_url: str, second_db_url: str) -> None:
    project = npm_project("dsl", ["@pgflow/dsl@0.8.1"])
    compiled: dict[str, list[str]] = json.loads(run_node_script(project, SCRIPT))
    with connect(db_url) as conn:
        for statements in compiled.values():
            for statement in statements:
                # The DSL's own SQL text, executed as the TypeScript tooling would.
                conn.execute(sql.SQL(statement))

    app = PgFlow(second_db_url)
    python_flows(app)
    for flow in app.flows.values():
        app.ensure_flow(flow)
    app.close()

    assert set(compiled) == {"dsl_linear", "dsl_diamond", "dsl_map"}
    ours, theirs = rows(second_db_url), rows(db_url)
    assert ours["steps"], "no steps were compiled"
    assert ours == theirs
