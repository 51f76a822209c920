"""Benchmark: the runs API on a database holding a million runs, and what the runs API's and live
events' database objects cost a worker's hot path when nobody watches.

Part 1 fills a fresh database with N runs (default 1,000,000; set-based INSERTs straight into
pgflow.runs: 20 flows, 3% started, 7% failed, 10% of those cancelled, one run every 2 s back from
now), VACUUM ANALYZE, then times through the client (median of --repeat calls, planning included):
count_runs over everything and over the last 24 h, find_runs' first page, a deep page (cursor at
half the history), flow + status, input containment, cancelled runs. Each find_runs query's plan
(EXPLAIN ANALYZE with the values) is summed up as the indexes it used and the rows it read.

Part 2 (--hot-path) runs the worker's SQL cycle (start_flow, pgmq.read, start_tasks,
complete_task; one transaction per call, inside the server, synchronous_commit off) for a 3-step
chain in three fresh databases taking turns in chunks: without this migration's objects
(indexes dropped, event triggers disabled), with its indexes only, and as shipped (indexes and
event triggers, nobody watching). Prints runs/s and the median per-chunk ratio to the first.

    python benchmarks/runs_api.py [--url postgresql://...] [-n 1000000] [--repeat 5]
                                  [--hot-path] [--hot-runs 200] [--chunks 8] [--skip-fill]

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from psycopg import ClientCursor, sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.client.history import encode_cursor  # noqa: E402
from pgflow_kombu.db import embedded, migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.input_index import set_input_index  # noqa: E402
from pgflow_kombu.db.queries import query  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

WORKER_ID = uuid.UUID("00000000-0000-4000-8000-00000000be0d")


def admin_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return os.environ["PGFLOW_TEST_DATABASE_URL"]
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def fresh_database(admin: str, name: str) -> str:
    with connect(admin) as conn:
        drop_database(conn, name)
        create_database(conn, name)
    url = with_database(admin, name)
    migrations.upgrade(url)
    return url


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeat`` calls, and the last result."""
    spent: list[float] = []
    result: Any = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        spent.append((time.perf_counter() - began) * 1000)
    return statistics.median(spent), result


def find_params(**given: Any) -> dict[str, Any]:
    """find_runs' query parameters, as the client passes them (page of 50)."""
    params: dict[str, Any] = {
        "flow_slug": None,
        "status": None,
        "since": None,
        "until": None,
        "input_contains": None,
        "after_started_at": None,
        "after_run_id": None,
        "limit": 51,
    }
    params.update(given)
    if params["input_contains"] is not None:
        params["input_contains"] = json.dumps(params["input_contains"])
    return params


def plan_summary(url: str, params: dict[str, Any]) -> str:
    """The indexes the plan of find_runs with these values uses, and the rows it read."""
    with connect(url) as conn:
        text = ClientCursor(conn).mogrify(query("runs.find_runs"), params)
        explain = sql.SQL(test_query("runs_api_bench_explain")).format(sql.SQL(text))
        rows = conn.execute(explain).fetchone()
    assert rows is not None
    indexes: list[str] = []
    read = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal read
        if "Index Name" in node:
            indexes.append(f"{node['Node Type']} {node['Index Name']}")
        elif node["Node Type"] == "Seq Scan":
            indexes.append(f"Seq Scan {node['Relation Name']}")
        if "Relation Name" in node or "Index Name" in node:
            read += int(node.get("Actual Rows", 0)) + int(node.get("Rows Removed by Filter", 0))
        for child in node.get("Plans", []):
            walk(child)

    walk(rows[0][0]["Plan"])
    return f"{'; '.join(dict.fromkeys(indexes))} ({read} rows read)"


def fill(url: str, n: int) -> None:
    began = time.perf_counter()
    with connect(url) as conn:
        conn.execute(test_query("runs_api_bench_flows"))
        step = 100_000
        for first in range(0, n, step):
            conn.execute(
                test_query("runs_api_bench_fill"),
                {"first": first, "n": min(step, n - first), "total": n},
            )
        conn.execute(test_query("runs_api_bench_cancel"))
        conn.execute(test_query("runs_api_bench_vacuum"))
    print(f"filled {n:,} runs in {time.perf_counter() - began:.1f} s")


def part1(url: str, n: int, repeat: int) -> None:
    client = Client(url)
    try:
        with connect(url) as conn:
            deep = conn.execute(test_query("runs_api_bench_at"), {"depth": n // 2}).fetchone()
        assert deep is not None
        deep_cursor = encode_cursor(deep[0], deep[1])
        day_ago = datetime.now(timezone.utc) - timedelta(days=1)
        cases: list[tuple[str, Callable[[], Any], dict[str, Any] | None]] = [
            ("count_runs() over everything", client.count_runs, None),
            ("count_runs(since=24 h ago)", lambda: client.count_runs(since=day_ago), None),
            (
                "count_runs(flow, since=24 h ago)",
                lambda: client.count_runs(flow_slug="flow_07", since=day_ago),
                None,
            ),
            ("find_runs() first page", client.find_runs, find_params()),
            (
                f"find_runs() page at depth {n // 2:,}",
                lambda: client.find_runs(after=deep_cursor),
                find_params(after_started_at=deep[0], after_run_id=deep[1]),
            ),
            (
                "find_runs(flow, status=failed)",
                lambda: client.find_runs(flow_slug="flow_07", status="failed"),
                find_params(flow_slug="flow_07", status="failed"),
            ),
            (
                "find_runs(status=started)",
                lambda: client.find_runs(status="started"),
                find_params(status="started"),
            ),
            (
                "find_runs(status=cancelled)",
                lambda: client.find_runs(status="cancelled"),
                find_params(status="cancelled"),
            ),
            (
                "find_runs(status=cancelled) at depth",
                lambda: client.find_runs(status="cancelled", after=deep_cursor),
                find_params(status="cancelled", after_started_at=deep[0], after_run_id=deep[1]),
            ),
            (
                'find_runs(input_contains={"user_id": 4242})',
                lambda: client.find_runs(input_contains={"user_id": 4242}),
                find_params(input_contains={"user_id": 4242}),
            ),
            (
                "find_runs(since..until 1 h, a day back)",
                lambda: client.find_runs(since=day_ago - timedelta(hours=1), until=day_ago),
                find_params(since=day_ago - timedelta(hours=1), until=day_ago),
            ),
        ]
        print(f"\n{'call':48} {'median ms':>10}  result / plan")
        for label, call, params in cases:
            ms, result = timed(call, repeat)
            if isinstance(result, dict):
                shown = ", ".join(f"{k} {v:,}" for k, v in result.items())
            else:
                shown = f"{len(result.runs)} runs, next={'yes' if result.next else 'no'}"
            print(f"{label:48} {ms:10.1f}  {shown}")
            if params is not None:
                print(f"{'':61}{plan_summary(url, params)}")
        # The input filter again with the optional GIN index (pgflow-kombu db input-index).
        set_input_index(url, True)
        label, call, params = next(c for c in cases if c[0].startswith("find_runs(input"))
        ms, _ = timed(call, repeat)
        print(f"{label + ' + input index':48} {ms:10.1f}")
        if params is not None:
            print(f"{'':61}{plan_summary(url, params)}")
        set_input_index(url, False)
    finally:
        client.close()


def part2(admin: str, runs: int, chunks: int) -> None:
    variants = {
        "without 0045 objects": ("runs_api_bench_drop_indexes", "runs_api_bench_events_off"),
        "indexes only": ("runs_api_bench_events_off",),
        "as shipped (nobody watching)": (),
    }
    urls: dict[str, str] = {}
    for i, (name, setup) in enumerate(variants.items()):
        url = fresh_database(admin, f"pgflow_bench_runs_api_hot{i}")
        with connect(url) as conn:
            conn.execute(test_query("sqlcore_add_worker"), {"worker_id": WORKER_ID, "queue": "b"})
            conn.execute(test_query("runs_api_bench_chain"))
            conn.execute(test_query("sqlcore_bench_procedure"))
            for name_ in setup:
                conn.execute(test_query(name_))
        urls[name] = url
    conns = {name: connect(url) for name, url in urls.items()}
    try:
        for conn in conns.values():
            conn.execute(test_query("runs_api_bench_sync_off"))
            conn.execute(
                test_query("sqlcore_bench_call_procedure"),
                {"flow_slug": "bench3", "steps": 3, "n": 20, "worker_id": WORKER_ID},
            )  # warm up
        rates: dict[str, list[float]] = {name: [] for name in conns}
        names = list(conns)
        for chunk in range(chunks):
            order = names[chunk % len(names) :] + names[: chunk % len(names)]
            for name in order:
                conns[name].execute(test_query("runs_api_bench_vacuum_queue"))
                row = (
                    conns[name]
                    .execute(
                        test_query("sqlcore_bench_call_procedure"),
                        {"flow_slug": "bench3", "steps": 3, "n": runs, "worker_id": WORKER_ID},
                    )
                    .fetchone()
                )
                assert row is not None
                rates[name].append(runs / row[0])

        def ratio(name: str, base: str) -> float:
            pairs = zip(rates[name], rates[base], strict=True)
            return statistics.median(r / b for r, b in pairs)

        base = names[0]
        print(f"\nhot path: 3-step chain, {chunks} chunks of {runs} runs, inside the server")
        for name in names:
            print(
                f"{name:32} {statistics.median(rates[name]):8.1f} runs/s"
                f"   median ratio to '{base}': {ratio(name, base):.3f}"
            )
        print(
            f"event triggers alone ('{names[2]}' / '{names[1]}'): {ratio(names[2], names[1]):.3f}"
        )
    finally:
        for conn in conns.values():
            conn.close()
        with connect(admin) as conn:
            for url in urls.values():
                drop_database(conn, url.rsplit("/", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="admin URL of the server (databases are created there)")
    parser.add_argument("-n", type=int, default=1_000_000, help="runs to fill")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-fill", action="store_true", help="reuse the filled database")
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    parser.add_argument("--hot-path", action="store_true", help="also measure the hot path")
    parser.add_argument("--hot-runs", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    admin = admin_url(args.url)
    name = "pgflow_bench_runs_api"
    url = with_database(admin, name)
    if not args.skip_fill:
        url = fresh_database(admin, name)
        fill(url, args.n)
    try:
        part1(url, args.n, args.repeat)
        if args.hot_path:
            part2(admin, args.hot_runs, args.chunks)
    finally:
        if not args.keep:
            with connect(admin) as conn:
                drop_database(conn, name)


if __name__ == "__main__":
    main()
