"""The runs API: count_runs, find_runs (filters, keyset pages), flow_history, list_runs."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg.types.json import Jsonb

from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.input_index import has_input_index, set_input_index
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.types import Run
from tests.support.sql import test_query

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url)
    yield c
    c.close()


@pytest.fixture
def history(db_url: str) -> list[dict[str, Any]]:
    """60 runs of two flows in all statuses; several share a start time (ties on started_at)."""
    rng = random.Random(13)
    rows: list[dict[str, Any]] = []
    with connect(db_url) as conn:
        for slug in ("alpha", "beta"):
            conn.execute(test_query("runs_api_flow"), {"flow_slug": slug})
        for i in range(60):
            rows.append(
                {
                    "run_id": uuid4(),
                    "flow_slug": "alpha" if i % 3 else "beta",
                    "status": rng.choice(["started", "completed", "failed"]),
                    "input": {"n": i, "tag": "even" if i % 2 == 0 else "odd"},
                    "started_at": T0 + timedelta(minutes=i // 4),  # 4 runs per minute
                }
            )
        for row in rows:
            conn.execute(test_query("runs_api_insert_run"), {**row, "input": Jsonb(row["input"])})
        for row in rows[:6]:  # cancelled: pgflow's row says failed
            if row["status"] == "started":
                continue
            row["status"] = "cancelled"
            conn.execute(test_query("runs_api_cancel"), {"run_id": row["run_id"]})
    return rows


def newest_first(rows: list[dict[str, Any]]) -> list[UUID]:
    ordered = sorted(rows, key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
    return [r["run_id"] for r in ordered]


def walk(client: Client, limit: int, **filters: Any) -> tuple[list[Run], int]:
    """Every page of find_runs; returns the runs and the number of pages."""
    found: list[Run] = []
    after = None
    pages = 0
    while True:
        page = client.find_runs(after=after, limit=limit, **filters)
        pages += 1
        found.extend(page.runs)
        assert len(page.runs) <= limit
        if page.next is None:
            return found, pages
        assert len(page.runs) == limit
        after = page.next


def test_pages_walk_every_run_once_newest_first(
    client: Client, history: list[dict[str, Any]]
) -> None:
    found, pages = walk(client, 7)
    assert [r.run_id for r in found] == newest_first(history)
    assert pages == 9  # 60 runs by 7: 8 full pages and a last one of 4
    assert client.find_runs(limit=60).next is None  # exactly all: no empty page after


@pytest.mark.parametrize(
    "filters",
    [
        {"flow_slug": "alpha"},
        {"status": "failed"},
        {"status": "cancelled"},
        {"status": "started", "flow_slug": "beta"},
        {"since": T0 + timedelta(minutes=3), "until": T0 + timedelta(minutes=9)},
        {"input_contains": {"tag": "even"}},
        {"input_contains": {"tag": "odd"}, "flow_slug": "alpha", "status": "completed"},
    ],
)
def test_filters_select_exactly_the_matching_runs(
    client: Client, history: list[dict[str, Any]], filters: dict[str, Any]
) -> None:
    def matches(row: dict[str, Any]) -> bool:
        return (
            ("flow_slug" not in filters or row["flow_slug"] == filters["flow_slug"])
            and ("status" not in filters or row["status"] == filters["status"])
            and ("since" not in filters or row["started_at"] >= filters["since"])
            and ("until" not in filters or row["started_at"] < filters["until"])
            and all(row["input"].get(k) == v for k, v in filters.get("input_contains", {}).items())
        )

    expected = newest_first([r for r in history if matches(r)])
    assert expected  # the fixture holds matching runs
    found, _ = walk(client, 4, **filters)
    assert [r.run_id for r in found] == expected
    by_id = {r["run_id"]: r for r in history}
    assert all(r.status == by_id[r.run_id]["status"] for r in found)


def test_count_runs_by_status_flow_and_window(
    client: Client, history: list[dict[str, Any]]
) -> None:
    def expected(rows: list[dict[str, Any]]) -> dict[str, int]:
        counts = dict.fromkeys(["started", "completed", "failed", "cancelled"], 0)
        for row in rows:
            counts[row["status"]] += 1
        return counts

    assert client.count_runs() == expected(history)
    assert client.count_runs()["cancelled"] > 0
    assert client.count_runs(flow_slug="beta") == expected(
        [r for r in history if r["flow_slug"] == "beta"]
    )
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)
    assert client.count_runs(since=since, until=until) == expected(
        [r for r in history if since <= r["started_at"] < until]
    )
    assert client.count_runs(since=T0 + timedelta(days=1)) == expected([])


def test_flow_history_and_list_runs(client: Client, history: list[dict[str, Any]]) -> None:
    alpha = newest_first([r for r in history if r["flow_slug"] == "alpha"])
    assert [r.run_id for r in client.flow_history("alpha", limit=5)] == alpha[:5]
    assert [r.run_id for r in client.list_runs(flow_slug="alpha", limit=5)] == alpha[:5]
    assert [r.run_id for r in client.list_runs(limit=0)] == []
    failed = newest_first([r for r in history if r["status"] == "failed"])
    assert [r.run_id for r in client.list_runs(status="failed")] == failed


def test_a_run_started_between_pages_does_not_shift_the_next_page(
    client: Client, history: list[dict[str, Any]], db_url: str
) -> None:
    first = client.find_runs(limit=10)
    with connect(db_url) as conn:  # newer than everything: would shift an OFFSET page
        conn.execute(
            test_query("runs_api_insert_run"),
            {
                "run_id": uuid4(),
                "flow_slug": "alpha",
                "status": "started",
                "input": Jsonb({}),
                "started_at": T0 + timedelta(days=1),
            },
        )
    second = client.find_runs(after=first.next, limit=10)
    assert [r.run_id for r in second.runs] == newest_first(history)[10:20]


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda c: c.find_runs(after="not-a-cursor"), "not-a-cursor"),
        (lambda c: c.find_runs(status="done"), "done"),
        (lambda c: c.find_runs(limit=1001), "1001"),
        (lambda c: c.find_runs(since=datetime(2026, 1, 1)), "since"),
        (lambda c: c.count_runs(until="yesterday"), "until"),
    ],
)
def test_bad_arguments_are_refused_before_querying(client: Client, call: Any, names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        call(client)


def test_cli_runs_list_pages_with_filters_and_runs_count(
    db_url: str, history: list[dict[str, Any]]
) -> None:
    from click.testing import CliRunner

    from pgflow_kombu.cli import cli

    def invoke(*args: str) -> Any:
        result = CliRunner().invoke(cli, ["--database-url", db_url, "runs", *args])
        assert result.exit_code == 0, result.output
        return result

    expected = newest_first(
        [r for r in history if r["flow_slug"] == "alpha" and r["input"]["tag"] == "even"]
    )
    args = ["--flow", "alpha", "--input-contains", '{"tag": "even"}', "--limit", "3"]
    args += ["--since", "2025-12-31T00:00:00Z", "--until", "2026-02-01"]
    seen: list[str] = []
    after: list[str] = []
    while True:
        result = invoke("list", *args, *after, "--json")
        seen += [r["run_id"] for r in json.loads(result.stdout)]
        nexts = [line for line in result.stderr.splitlines() if line.startswith("next: ")]
        if not nexts:
            break
        after = ["--after", nexts[0].removeprefix("next: ")]
    assert seen == [str(i) for i in expected]
    table = invoke("list", "--status", "cancelled", "--limit", "1").output
    assert "cancelled" in table and "next: " in table
    counts = json.loads(invoke("count", "--flow", "beta", "--since", "1000w", "--json").output)
    beta = [r for r in history if r["flow_slug"] == "beta"]
    assert counts == {s: sum(r["status"] == s for r in beta) for s in counts}
    assert sum(counts.values()) == len(beta)


def test_the_app_facades_are_the_clients(db_url: str, history: list[dict[str, Any]]) -> None:
    from pgflow_kombu import PgFlow

    app = PgFlow(db_url)
    try:
        page = app.find_runs(flow_slug="beta", limit=3)
        beta = newest_first([r for r in history if r["flow_slug"] == "beta"])
        assert [r.run_id for r in page.runs] == beta[:3]
        assert [
            r.run_id for r in app.find_runs(flow_slug="beta", after=page.next, limit=3).runs
        ] == beta[3:6]
        assert [r.run_id for r in app.flow_history("beta", limit=4)] == beta[:4]
        assert [r.run_id for r in app.list_runs(flow_slug="beta", limit=4)] == beta[:4]
        assert sum(app.count_runs().values()) == len(history)
    finally:
        app.close()


def test_the_input_index_is_created_and_dropped_on_request(
    client: Client, db_url: str, history: list[dict[str, Any]]
) -> None:
    from click.testing import CliRunner

    from pgflow_kombu.cli import cli

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--database-url", db_url, "db", "input-index", *args])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    def definition() -> str | None:
        with connect(db_url) as conn:
            row = conn.execute(test_query("runs_api_input_index_def")).fetchone()
        return None if row is None else str(row[0])

    even = newest_first([r for r in history if r["input"]["tag"] == "even"])
    assert definition() is None and not has_input_index(db_url)  # off by default
    assert [r.run_id for r in walk(client, 4, input_contains={"tag": "even"})[0]] == even

    assert invoke() == "input index created"
    assert "gin (input jsonb_path_ops)" in (definition() or "")
    assert has_input_index(db_url)
    assert invoke() == "input index already created"
    assert [r.run_id for r in walk(client, 4, input_contains={"tag": "even"})[0]] == even

    with connect(db_url) as conn:
        conn.execute(test_query("runs_api_invalidate_input_index"))
    assert not has_input_index(db_url)
    assert set_input_index(db_url, True) is True  # rebuilt
    assert has_input_index(db_url)

    assert invoke("--drop") == "input index dropped"
    assert definition() is None
    assert invoke("--drop") == "input index already dropped"
    assert [r.run_id for r in walk(client, 4, input_contains={"tag": "even"})[0]] == even
