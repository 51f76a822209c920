"""Benchmark: what conditional steps cost a flow that has none (and one that has).

Fresh databases on one server, each with every migration of this checkout. In the baseline one,
pgflow's functions are replaced by those of a commit before conditions existed (``--baseline``,
default the last commit without them), so it runs the same workload without the hooks (the
probes of pgflow_kombu.step_conditions and skipped_steps). The workload is sql_core.py's:

    start_flow, then per step: pgmq.read, pgflow.start_tasks, pgflow.complete_task per task

for N runs of a single-step flow and of a 3-step chain, one transaction per call, made by a
procedure inside the server (no client round trips; ``--client-side`` makes them from here).
The databases take turns in short chunks (alternating order, queues vacuumed before each chunk).
Prints runs/s and the median of the per-chunk speed ratios now/baseline for flows without
conditions (the "now" and baseline databases get exactly the same calls), and, for information,
in a third database, the same flows with a condition on every step (one that holds) against the
plain flows.

    python benchmarks/conditions.py [--url postgresql://...] [-n 25] [--chunks 12]
                                    [--baseline <git commit>] [--client-side] [--work]

``--work`` also counts, free of timing noise, the shared buffers each run touches and the WAL it
writes (every call under EXPLAIN ANALYZE, which includes the statements the functions run).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sql_core import (  # noqa: E402
    admin_url,
    prepare,
    run_flows,
    run_flows_in_server,
    vacuum_queues,
    work_per_run,
)
from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

# The last commit whose pgflow functions have no condition hooks.
BASELINE = "3ba6b21990e5adb9b331fd6056d253422f98fc87"
WORKLOADS = {"single-step": ("bench1", 1), "3-step chain": ("bench3", 3)}
CONDITIONAL = {"bench1": "bench1c", "bench3": "bench3c"}


def baseline_functions(commit: str) -> str:
    """pgflow's functions as the baseline commit defines them, as CREATE OR REPLACE statements."""
    text = subprocess.run(
        ["git", "show", f"{commit}:sql/migrations/0001_pgflow_schema.sql"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bodies = re.findall(r"^CREATE FUNCTION .*?^\$\$;$", text, flags=re.MULTILINE | re.DOTALL)
    return "\n".join(b.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1) for b in bodies)


def add_conditional_flows(url: str) -> None:
    """bench1c / bench3c: bench1 / bench3 with a condition that holds on every step."""
    client = Client(url)
    try:
        one = Flow("bench1c")
        one.add_step("only", if_={"run": {"order_id": 42}})
        three = Flow("bench3c")
        three.add_step("a", if_={"run": {"order_id": 42}})
        three.add_step("b", depends_on=["a"], if_={"a": {"ok": True}})
        three.add_step("c", depends_on=["b"], if_not={"b": {"ok": False}})
        for flow in (one, three):
            client.compile_flow(flow.shape())
    finally:
        client.close()


def compare(
    runner: Callable[[Any, str, int, int], float],
    conns: dict[str, tuple[Any, str]],
    steps: int,
    n: int,
    chunks: int,
) -> tuple[dict[str, float], float]:
    """Runs/s of each (connection, flow) and the median per-chunk speed of the second relative
    to the first (first's seconds / second's seconds: above 1 means the second is faster)."""
    names = list(conns)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for chunk in range(chunks):
        for name in names if chunk % 2 == 0 else reversed(names):
            conn, flow_slug = conns[name]
            vacuum_queues(conn)
            vacuum = sql.SQL(test_query("sqlcore_bench_vacuum"))
            conn.execute(vacuum.format(sql.Identifier(f"q_{flow_slug}")))
            seconds[name].append(runner(conn, flow_slug, steps, n))
    rates = {name: n * chunks / sum(values) for name, values in seconds.items()}
    first, second = (seconds[name] for name in names)
    ratio = statistics.median(a / b for a, b in zip(first, second, strict=True))
    return rates, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="server where the benchmark may create databases")
    parser.add_argument("-n", type=int, default=25, help="runs per chunk")
    parser.add_argument("--chunks", type=int, default=12, help="chunks per workload and database")
    parser.add_argument("--baseline", default=BASELINE, help="git commit without condition hooks")
    parser.add_argument("--client-side", action="store_true", help="make the calls from here")
    parser.add_argument("--work", action="store_true", help="also count buffers and WAL per run")
    args = parser.parse_args()

    admin = admin_url(args.url)
    suffix = uuid.uuid4().hex[:8]
    names = {
        "now": f"bench_now_{suffix}",
        "baseline": f"bench_base_{suffix}",
        "conditional": f"bench_cond_{suffix}",
    }
    with connect(admin) as conn:
        for name in names.values():
            create_database(conn, name)
    urls = {which: with_database(admin, name) for which, name in names.items()}
    try:
        for url in urls.values():
            migrations.upgrade(url)
            prepare(url)
        add_conditional_flows(urls["conditional"])
        with connect(urls["baseline"]) as conn:
            conn.execute(baseline_functions(args.baseline).encode())
        for which, url in urls.items():
            with connect(url) as conn:
                row = conn.execute(test_query("conditions_hooked_functions")).fetchone()
            hooked = row[0] if row else 0
            assert (hooked > 0) == (which != "baseline"), f"{which}: {hooked} hooked functions"
        options = "-c synchronous_commit=off"
        now, base, cond = (
            connect(urls[w], options=options) for w in ("now", "baseline", "conditional")
        )
        with now, base, cond:
            runner = run_flows if args.client_side else run_flows_in_server
            if not args.client_side:
                for conn in (now, base, cond):
                    conn.execute(test_query("sqlcore_bench_procedure"))
            for conn in (now, base, cond):  # warm caches and plans
                for flow_slug, steps in WORKLOADS.values():
                    runner(conn, flow_slug, steps, 20)
                    if conn is cond:
                        runner(conn, CONDITIONAL[flow_slug], steps, 20)
            where = "from the client" if args.client_side else "inside the server"
            print(
                f"{args.chunks} chunks of {args.n} runs per workload and database, one "
                f"transaction per call made {where}, synchronous_commit=off; baseline "
                f"{args.baseline[:10]}"
            )
            for workload, (flow_slug, steps) in WORKLOADS.items():
                rates, ratio = compare(
                    runner,
                    {"baseline": (base, flow_slug), "now": (now, flow_slug)},
                    steps,
                    args.n,
                    args.chunks,
                )
                print(
                    f"{workload:>13}, no conditions: now {rates['now']:7.1f} runs/s   baseline "
                    f"{rates['baseline']:7.1f} runs/s   now/baseline {ratio:.3f}x speed "
                    "(median of chunks)"
                )
                rates, ratio = compare(
                    runner,
                    {"plain": (cond, flow_slug), "conditional": (cond, CONDITIONAL[flow_slug])},
                    steps,
                    args.n,
                    args.chunks,
                )
                print(
                    f"{workload:>13}, every step conditional: {rates['conditional']:7.1f} runs/s "
                    f"vs plain {rates['plain']:7.1f} runs/s   conditional/plain {ratio:.3f}x speed"
                )
            if args.work:
                for workload, (flow_slug, steps) in WORKLOADS.items():
                    work = {
                        "baseline": work_per_run(base, flow_slug, steps, 20),
                        "now": work_per_run(now, flow_slug, steps, 20),
                        "conditional": work_per_run(cond, CONDITIONAL[flow_slug], steps, 20),
                    }
                    print(
                        f"{workload:>13}: per run, shared buffers baseline "
                        f"{work['baseline']['buffers']:.0f}, now {work['now']['buffers']:.0f}, "
                        f"conditional {work['conditional']['buffers']:.0f}; WAL bytes baseline "
                        f"{work['baseline']['wal_bytes']:.0f}, now {work['now']['wal_bytes']:.0f}, "
                        f"conditional {work['conditional']['wal_bytes']:.0f}"
                    )
    finally:
        with connect(admin) as conn:
            for name in names.values():
                drop_database(conn, name)


if __name__ == "__main__":
    main()
