"""Benchmark: our pgflow SQL core against the reference pgflow 0.8.1 SQL, on one server, one run.

Two fresh databases on the same server: ours (every migration of this checkout, as shipped:
run-finished NOTIFY trigger included) and the reference (npm @pgflow/core 0.8.1 migrations, with
a no-op ``realtime.send``, which its functions require). The workload is what a worker does, one
call per transaction (autocommit), as the TypeScript and Python workers do:

    start_flow, then per step: pgmq.read, pgflow.start_tasks, pgflow.complete_task per task

for N runs of a single-step flow and N runs of a 3-step chain. The two schemas take turns in short chunks (the order alternates, and each queue table is vacuumed
before a chunk), so that load from other processes and pgmq's queue churn weigh on both alike.
Prints runs/s per schema (all chunks) and the median of the per-chunk ratios ours/reference.

    python benchmarks/sql_core.py [--url postgresql://...] [-n 25] [--chunks 12]
                                  [--synchronous-commit off]

``--synchronous-commit off`` takes the WAL flush wait out of each commit (the same for both
schemas), which leaves the work the SQL does. ``--server-side`` runs the same calls in a procedure
inside the server (still one transaction per call), which takes client round trips (and the
scheduling delays a busy machine adds to each) out of the measure. ``--work`` also counts, free of timing noise, the
shared buffers each run touches and the WAL it writes (every call under EXPLAIN ANALYZE, which
includes the statements the functions run).

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
Needs npm (the reference package is fetched into .reference/ once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgflow_kombu.db import embedded, migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from tests.reference import install as install_reference  # noqa: E402
from tests.reference.driver import Db  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

WORKER_ID = uuid.UUID("00000000-0000-4000-8000-00000000be0c")
WORKLOADS = {"single-step": ("bench1", 1), "3-step chain": ("bench3", 3)}
INPUT = '{"order_id": 42, "items": [1, 2, 3]}'
OUTPUT = '{"ok": true, "value": 7}'


def admin_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return os.environ["PGFLOW_TEST_DATABASE_URL"]
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def prepare(url: str) -> None:
    db = Db(url, "bench")
    try:
        db.add_worker(WORKER_ID, "bench")
        db.call("create_flow", flow_slug="bench1")
        db.call("add_step", flow_slug="bench1", step_slug="only")
        db.call("create_flow", flow_slug="bench3")
        db.call("add_step", flow_slug="bench3", step_slug="a")
        db.call("add_step", flow_slug="bench3", step_slug="b", deps_slugs=["a"])
        db.call("add_step", flow_slug="bench3", step_slug="c", deps_slugs=["b"])
    finally:
        db.close()


def run_flows(conn: Any, flow_slug: str, steps: int, n: int) -> float:
    """Seconds to take n runs of flow_slug from start to completion, call by call."""
    start_flow = test_query("sqlcore_bench_start_flow")
    read = test_query("sqlcore_bench_read")
    start_tasks = test_query("sqlcore_bench_start_tasks")
    complete = test_query("sqlcore_bench_complete_task")
    began = time.perf_counter()
    for _ in range(n):
        conn.execute(start_flow, {"flow_slug": flow_slug, "input": INPUT})
        for _step in range(steps):
            msg_ids = [row[0] for row in conn.execute(read, {"flow_slug": flow_slug})]
            tasks = conn.execute(
                start_tasks, {"flow_slug": flow_slug, "msg_ids": msg_ids, "worker_id": WORKER_ID}
            ).fetchall()
            for run_id, step_slug, task_index in tasks:
                conn.execute(
                    complete,
                    {
                        "run_id": run_id,
                        "step_slug": step_slug,
                        "task_index": task_index,
                        "output": OUTPUT,
                    },
                )
    return time.perf_counter() - began


def measured(conn: Any, statement: str, params: dict[str, Any]) -> tuple[list[Any], dict[str, int]]:
    """Run one call under EXPLAIN; return its rows and its buffer and WAL counts."""
    with conn.transaction():
        plan = conn.execute(
            sql.SQL(test_query("sqlcore_bench_measured")).format(sql.SQL(statement)), params
        ).fetchone()[0][0]["Plan"]
        rows = conn.execute(test_query("sqlcore_bench_rows"), prepare=False).fetchall()
    counts = {
        "buffers": plan["Shared Hit Blocks"] + plan["Shared Read Blocks"],
        "wal_records": plan["WAL Records"],
        "wal_bytes": plan["WAL Bytes"],
    }
    return rows, counts


def work_per_run(conn: Any, flow_slug: str, steps: int, n: int) -> dict[str, float]:
    """Shared buffers touched and WAL written per run (the same calls as run_flows)."""
    total = {"buffers": 0, "wal_records": 0, "wal_bytes": 0}

    def call(name: str, params: dict[str, Any]) -> list[Any]:
        rows, counts = measured(conn, test_query(name).rstrip(";"), params)
        for key, value in counts.items():
            total[key] += value
        return rows

    for _ in range(n):
        call("sqlcore_bench_start_flow", {"flow_slug": flow_slug, "input": INPUT})
        for _step in range(steps):
            msg_ids = [row[0] for row in call("sqlcore_bench_read", {"flow_slug": flow_slug})]
            tasks = call(
                "sqlcore_bench_start_tasks",
                {"flow_slug": flow_slug, "msg_ids": msg_ids, "worker_id": WORKER_ID},
            )
            for run_id, step_slug, task_index in tasks:
                call(
                    "sqlcore_bench_complete_task",
                    {
                        "run_id": run_id,
                        "step_slug": step_slug,
                        "task_index": task_index,
                        "output": OUTPUT,
                    },
                )
    return {key: value / n for key, value in total.items()}


def run_flows_in_server(conn: Any, flow_slug: str, steps: int, n: int) -> float:
    """Seconds the server takes for n runs, the same calls made by a procedure."""
    params = {"flow_slug": flow_slug, "steps": steps, "n": n, "worker_id": WORKER_ID}
    row = conn.execute(test_query("sqlcore_bench_call_procedure"), params).fetchone()
    return float(row[0])


def vacuum_queues(conn: Any) -> None:
    for flow_slug, _steps in WORKLOADS.values():
        table = sql.Identifier(f"q_{flow_slug}")
        conn.execute(sql.SQL(test_query("sqlcore_bench_vacuum")).format(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="server where the benchmark may create databases")
    parser.add_argument("-n", type=int, default=25, help="runs per chunk")
    parser.add_argument("--chunks", type=int, default=12, help="chunks per workload and schema")
    parser.add_argument("--synchronous-commit", choices=["on", "off"], default="on")
    parser.add_argument("--server-side", action="store_true", help="run the calls in the server")
    parser.add_argument("--work", action="store_true", help="also count buffers and WAL per run")
    args = parser.parse_args()

    admin = admin_url(args.url)
    suffix = uuid.uuid4().hex[:8]
    names = {"ours": f"bench_ours_{suffix}", "reference": f"bench_ref_{suffix}"}
    with connect(admin) as conn:
        for name in names.values():
            create_database(conn, name)
    urls = {schema: with_database(admin, name) for schema, name in names.items()}
    try:
        migrations.upgrade(urls["ours"])
        install_reference(urls["reference"], realtime="noop")
        for url in urls.values():
            prepare(url)
        options = f"-c synchronous_commit={args.synchronous_commit}"
        conns = {schema: connect(url, options=options) for schema, url in urls.items()}
        with conns["ours"] as ours_conn, conns["reference"] as ref_conn:
            by_schema = {"ours": ours_conn, "reference": ref_conn}
            server = ours_conn.execute(test_query("sqlcore_bench_server_version")).fetchone()
            print(
                f"PostgreSQL {server[0] if server else '?'}: {args.chunks} chunks of {args.n} runs "
                f"per workload and schema, one transaction per call, "
                f"synchronous_commit={args.synchronous_commit}"
                + (", calls made inside the server" if args.server_side else "")
            )
            runner = run_flows
            if args.server_side:
                runner = run_flows_in_server
                for conn in by_schema.values():
                    conn.execute(test_query("sqlcore_bench_procedure"))
            for conn in by_schema.values():  # warm caches and plans
                for flow_slug, steps in WORKLOADS.values():
                    runner(conn, flow_slug, steps, 20)
            for workload, (flow_slug, steps) in WORKLOADS.items():
                seconds: dict[str, list[float]] = {"ours": [], "reference": []}
                for chunk in range(args.chunks):
                    order = ["ours", "reference"] if chunk % 2 == 0 else ["reference", "ours"]
                    for schema in order:
                        vacuum_queues(by_schema[schema])
                        seconds[schema].append(runner(by_schema[schema], flow_slug, steps, args.n))
                runs = args.n * args.chunks
                ours, ref = runs / sum(seconds["ours"]), runs / sum(seconds["reference"])
                ratio = statistics.median(
                    r / o for o, r in zip(seconds["ours"], seconds["reference"], strict=True)
                )
                print(
                    f"{workload:>13}: ours {ours:7.1f} runs/s   reference {ref:7.1f} runs/s   "
                    f"ours/reference {ratio:.2f}x (median of chunks)"
                )
            if args.work:
                for workload, (flow_slug, steps) in WORKLOADS.items():
                    for conn in by_schema.values():
                        vacuum_queues(conn)
                    work = {s: work_per_run(c, flow_slug, steps, 20) for s, c in by_schema.items()}
                    o, r = work["ours"], work["reference"]
                    print(
                        f"{workload:>13}: per run, shared buffers ours {o['buffers']:.0f} "
                        f"reference {r['buffers']:.0f}; WAL records ours {o['wal_records']:.0f} "
                        f"reference {r['wal_records']:.0f}; WAL bytes ours {o['wal_bytes']:.0f} "
                        f"reference {r['wal_bytes']:.0f}"
                    )
    finally:
        with connect(admin) as conn:
            for name in names.values():
                drop_database(conn, name)


if __name__ == "__main__":
    main()
