"""Benchmark: the claim path (pgflow_kombu.claim_tasks) with flow control on against off.

One fresh database. Six single-step flows of a no-op, compiled through the app (which stores
their limits): no limits; max_concurrency; max_concurrency per concurrency_key (50 keys);
rate_limit; priorities (runs started with a priority); all of them at once. The limits are set high
enough never to defer a task, so the measure is what checking them costs. Per flow, in chunks
that take turns: start N runs, then what a worker does per batch of 10 messages, one
transaction per call: pgmq.read, claim_tasks, report_tasks (completions). Prints the claim
calls' throughput per flow (tasks claimed per second, summed claim-call time only) and its ratio
to the flow without limits, and the same for the whole read-claim-report cycle.

    python benchmarks/claim_limits.py [--url postgresql://...] [-n 200] [--chunks 6]

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
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

from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgflow_kombu import PgFlow  # noqa: E402
from pgflow_kombu.db import embedded, migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.queries import query  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402

BATCH = 10
HIGH = 1_000_000

MODES: dict[str, dict[str, Any]] = {
    "off": {},
    "max_concurrency": {"max_concurrency": HIGH},
    "concurrency_key": {"max_concurrency": HIGH, "concurrency_key": "k"},
    "rate_limit": {"rate_limit": f"{HIGH}/s"},
    "priority": {"priority": 1},
    "all": {"max_concurrency": HIGH, "concurrency_key": "k", "rate_limit": f"{HIGH}/s"},
}


def admin_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return os.environ["PGFLOW_TEST_DATABASE_URL"]
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def make_flow(mode: str, options: dict[str, Any]) -> Flow:
    flow = Flow(f"bench_{mode}", **options)

    @flow.step
    def noop(run: dict[str, int]) -> int:
        return run["i"]

    return flow


def start_runs(app: PgFlow, mode: str, n: int) -> None:
    inputs = [{"i": i, "k": f"key{i % 50}"} for i in range(n)]
    if mode in ("priority", "all"):
        # Every run at one priority: the checks run, nothing waits behind higher priorities.
        app.start_many(f"bench_{mode}", inputs, priority=2)
    else:
        app.start_many(f"bench_{mode}", inputs)


def drain(conn: Any, slug: str, worker_id: str, n: int) -> tuple[int, float, float]:
    """Claim and complete the flow's n tasks; returns (claimed, claim seconds, cycle seconds)."""
    claimed = 0
    claim_time = 0.0
    began = time.perf_counter()
    while claimed < n:
        ids = [
            r[0]
            for r in conn.execute(
                query("worker.read_messages"), {"queue_name": slug, "vt": 30, "qty": BATCH}
            ).fetchall()
        ]
        if not ids:
            continue
        t0 = time.perf_counter()
        rows = conn.execute(
            query("worker.claim_tasks"),
            {"flow_slug": slug, "msg_ids": ids, "worker_id": worker_id, "read_visibility": 30},
        ).fetchall()
        claim_time += time.perf_counter() - t0
        claimed += len(rows)
        reports = [
            {
                "run_id": str(run_id),
                "step_slug": step_slug,
                "task_index": task_index,
                "attempt": attempt,
                "worker_id": worker_id,
                "output": 1,
            }
            for run_id, step_slug, task_index, _msg, _input, attempt, _timeout in rows
        ]
        if reports:
            conn.execute(query("worker.report_tasks"), {"reports": Jsonb(reports)}).fetchall()
    return claimed, claim_time, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="server where the benchmark may create a database")
    parser.add_argument("-n", type=int, default=200, help="runs per chunk")
    parser.add_argument("--chunks", type=int, default=6, help="chunks per flow")
    args = parser.parse_args()

    admin = admin_url(args.url)
    name = f"bench_limits_{uuid.uuid4().hex[:8]}"
    with connect(admin) as conn:
        create_database(conn, name)
    url = with_database(admin, name)
    try:
        migrations.upgrade(url)
        app = PgFlow(url)
        for mode, options in MODES.items():
            app.ensure_flow(app.register(make_flow(mode, options)))
        worker_ids = {mode: str(uuid.uuid4()) for mode in MODES}
        claim_rate: dict[str, list[float]] = {mode: [] for mode in MODES}
        cycle_rate: dict[str, list[float]] = {mode: [] for mode in MODES}
        with connect(url) as conn:
            conn.execute(
                query("worker.register"),
                {
                    "worker_ids": list(worker_ids.values()),
                    "queue_names": [f"bench_{m}" for m in worker_ids],
                    "function_name": "bench",
                },
            )
            for chunk in range(args.chunks):
                order = list(MODES) if chunk % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    start_runs(app, mode, args.n)
                    claimed, claim_s, cycle_s = drain(
                        conn, f"bench_{mode}", worker_ids[mode], args.n
                    )
                    claim_rate[mode].append(claimed / claim_s)
                    cycle_rate[mode].append(claimed / cycle_s)
        app.close()
        base_claim = statistics.median(claim_rate["off"])
        base_cycle = statistics.median(cycle_rate["off"])
        print(
            f"{args.chunks} chunks of {args.n} single-task runs per flow, claims of {BATCH} "
            "messages, medians:"
        )
        print(
            f"{'flow control':<16} {'claims tasks/s':>15} {'ratio':>6} {'cycle tasks/s':>14} {'ratio':>6}"
        )
        for mode in MODES:
            c = statistics.median(claim_rate[mode])
            y = statistics.median(cycle_rate[mode])
            print(f"{mode:<16} {c:>15.0f} {c / base_claim:>6.2f} {y:>14.0f} {y / base_cycle:>6.2f}")
    finally:
        with connect(admin) as conn:
            drop_database(conn, name)


if __name__ == "__main__":
    main()
