"""Benchmark: database CPU per job of each of our triggers and indexes on pgflow's tables, one run.

Every trigger and index of ours on pgflow.runs, pgflow.step_states and pgflow.step_tasks (the
objects named pgflow_kombu_*) is work a job pays for: a row trigger runs per step or run status
change, an index gets an entry per insert and per non-HOT update. The workload is
benchmarks/set_based.py's (start N runs, read, claim and report their tasks; the set-based or the
per-row path), run in fresh databases that take turns chunk by chunk on one server:

    full       every migration of this checkout
    -<object>  the same with that one object dropped
    bare       with all of them dropped

and the backend CPU of each measured batch is read from /proc: every backend is pinned to one
CPU, each measured batch follows an unmeasured one of the same setup, and the tables a job writes
are vacuumed before each batch (dead rows would otherwise pile up until autovacuum came, at a
different time in each database). An object's cost is the median over chunks of (full - without
it) per job; bare gives their sum. No watcher and no dashboard is registered,
so the event triggers take their cheap path (the one every job pays).

    python benchmarks/schema_costs.py --url postgresql://postgres@127.0.0.1:5441/postgres
                                      [-n 100] [--chunks 20] [--chain] [--path set|per-row]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.set_based import jobs, per_row_report_tasks  # noqa: E402
from benchmarks.sql_core import admin_url, prepare  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from tests.support.sql import test_query  # noqa: E402


def drop(conn: Any, kind: str, name: str, table: str) -> None:
    if kind == "trigger":
        query = sql.SQL(test_query("costs_drop_trigger")).format(
            sql.Identifier(name), sql.Identifier(table)
        )
    else:
        query = sql.SQL(test_query("costs_drop_index")).format(sql.Identifier(name))
    conn.execute(query)


def open_setups(
    admin: str, suffix: str, created: list[str], conns: dict[str, Any], cpu: int
) -> None:
    """A database per setup (recorded in created), each with its connection in conns."""
    with connect(admin) as conn:
        create_database(conn, f"costs_0_{suffix}")
    created.append(f"costs_0_{suffix}")
    migrations.upgrade(with_database(admin, created[0]))
    with connect(with_database(admin, created[0])) as conn:
        objects = [tuple(r) for r in conn.execute(test_query("costs_our_objects"))]
    setups: dict[str, list[tuple[str, str, str]]] = {"full": [], "bare": objects}
    for kind, name, table in objects:
        setups[f"-{name}"] = [(kind, name, table)]
    for i, (setup, dropped) in enumerate(setups.items()):
        name = f"costs_{i}_{suffix}"
        if i > 0:
            with connect(admin) as conn:
                create_database(conn, name)
            created.append(name)
            migrations.upgrade(with_database(admin, name))
        url = with_database(admin, name)
        prepare(url)
        conn = connect(url)
        conns[setup] = conn
        # One CPU for every measured backend: processes that stay on different CPUs of a
        # shared machine run at different speeds, which a setup would take for its own.
        os.sched_setaffinity(conn.info.backend_pid, {cpu})
        for kind, obj, table in dropped:
            drop(conn, kind, obj, table)
        conn.execute(per_row_report_tasks().encode())


def measure(conns: dict[str, Any], args: argparse.Namespace) -> dict[str, list[float]]:
    """Backend CPU seconds of each setup's measured batches, chunk by chunk."""
    flow_slug, steps = ("bench3", 3) if args.chain else ("bench1", 1)
    vacuum = sql.SQL(test_query("costs_vacuum")).format(
        sql.Identifier(f"q_{flow_slug}"), sql.Identifier(f"a_{flow_slug}")
    )
    for conn in conns.values():  # warm caches and plans
        for _ in range(3):
            jobs(conn, args.path, flow_slug, steps, args.n)
    seconds: dict[str, list[float]] = {s: [] for s in conns}
    shuffled = random.Random(1)
    for _chunk in range(args.chunks):
        # A setup's measured batch follows an unmeasured one of its own, so that none runs
        # on caches that the setup before it left cold (the order is shuffled anyway).
        for setup in shuffled.sample(list(conns), len(conns)):
            conns[setup].execute(vacuum)
            jobs(conns[setup], args.path, flow_slug, steps, args.n)
            conns[setup].execute(vacuum)
            seconds[setup].append(jobs(conns[setup], args.path, flow_slug, steps, args.n))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="local server where the benchmark may create databases")
    parser.add_argument("-n", type=int, default=100, help="jobs per batch (and per chunk)")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per setup")
    parser.add_argument("--chain", action="store_true", help="3-step chain instead of one step")
    parser.add_argument("--path", choices=("set", "per-row"), default="set")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU every backend is pinned to")
    args = parser.parse_args()

    admin = admin_url(args.url)
    created: list[str] = []
    conns: dict[str, Any] = {}
    try:
        open_setups(admin, uuid.uuid4().hex[:8], created, conns, args.cpu)
        seconds = measure(conns, args)
        print(
            f"{args.chunks} chunks of {args.n} jobs ({3 if args.chain else 1}-step flow, "
            f"{args.path} path) per setup; backend CPU per job (median over chunks), and per "
            "object the median over chunks of (full - without it)"
        )
        full = seconds["full"]
        print(f"{'full':>48}: {statistics.median(full) / args.n * 1e6:7.1f} µs")
        for setup, values in seconds.items():
            if setup == "full":
                continue
            diffs = [f - s for f, s in zip(full, values, strict=True)]
            print(
                f"{setup:>48}: {statistics.median(values) / args.n * 1e6:7.1f} µs  "
                f"cost {statistics.median(diffs) / args.n * 1e6:6.1f} µs/job"
            )
    finally:
        for conn in conns.values():
            conn.close()
        with connect(admin) as conn:
            for name in created:
                drop_database(conn, name)


if __name__ == "__main__":
    main()
