"""Benchmark: database CPU per job of the set-based paths against the per-row paths, one run.

A job is a run of a one-step flow (or of a 3-step chain with --chain), taken through what the
client and a worker do with a batch of N jobs: start N runs, read the N messages, claim them,
report the N completions (for a chain, read, claim and report again per step). Three setups
on one server, each in a fresh database of its own:

    set        ours: pgflow_kombu.start_flows (one statement), pgflow_kombu.claim_tasks,
               pgflow_kombu.report_tasks taking the set-based path (0090_set_based.sql)
    per-row    ours, as before 0090: pgflow.start_flow per run (pipelined, one transaction),
               pgflow_kombu.claim_tasks, and report_tasks's per-row loop (0030_worker.sql's,
               installed under another name)
    reference  npm @pgflow/core 0.8.1 (no-op realtime.send): pgflow.start_flow per run and
               pgflow.complete_task per task (pipelined, one transaction each), pgflow.start_tasks

The measure is the CPU time (user + system) of each setup's server backend process, read from
/proc before and after each chunk: what the database spends, free of client round trips and
commit waits, so the server must run on this machine. The setups take turns chunk by chunk (the
order alternates; each queue table is vacuumed before a chunk). Prints µs of backend CPU per job
for each setup and the ratios set/per-row and set/reference (medians of the per-chunk ratios).

    python benchmarks/set_based.py --url postgresql://postgres@127.0.0.1:5441/postgres
                                   [-n 100] [--chunks 20] [--chain]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sql_core import WORKER_ID, admin_url, prepare  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from tests.reference import install as install_reference  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

SETUPS = ("set", "per-row", "reference")
INPUT = {"order_id": 42, "items": [1, 2, 3]}
OUTPUT = {"ok": True, "value": 7}
TICK = os.sysconf("SC_CLK_TCK")


def per_row_report_tasks() -> str:
    """report_tasks as 0030_worker.sql defines it (one report at a time), as a function of its
    own in schema public."""
    text = (ROOT / "sql" / "migrations" / "0030_worker.sql").read_text()
    found = re.search(
        r"CREATE OR REPLACE FUNCTION pgflow_kombu\.report_tasks\(.*?\n\$\$;", text, re.S
    )
    if found is None:
        raise RuntimeError("report_tasks not found in 0030_worker.sql")
    return found.group(0).replace(
        "pgflow_kombu.report_tasks(", "public.bench_report_tasks_per_row(", 1
    )


def backend_cpu(conn: Any) -> float:
    """Seconds of CPU the connection's server process has used: the scheduler's nanosecond
    count when the kernel keeps it, else utime + stime (in clock ticks)."""
    pid = conn.info.backend_pid
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def start(conn: Any, setup: str, flow_slug: str, n: int) -> None:
    if setup == "set":
        conn.execute(
            test_query("setb_bench_start_flows"),
            {"flow_slug": flow_slug, "inputs": [Jsonb(INPUT)] * n},
        )
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            test_query("sqlcore_bench_start_flow"),
            [{"flow_slug": flow_slug, "input": Jsonb(INPUT)}] * n,
        )


def claim(conn: Any, setup: str, flow_slug: str, n: int) -> list[tuple[Any, ...]]:
    msg_ids = [
        r[0] for r in conn.execute(test_query("setb_bench_read"), {"flow_slug": flow_slug, "n": n})
    ]
    name = "sqlcore_bench_start_tasks" if setup == "reference" else "setb_bench_claim_tasks"
    params = {"flow_slug": flow_slug, "msg_ids": msg_ids, "worker_id": WORKER_ID}
    rows: list[tuple[Any, ...]] = conn.execute(test_query(name), params).fetchall()
    return rows


def report(conn: Any, setup: str, tasks: list[tuple[Any, ...]]) -> None:
    if setup == "reference":
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                test_query("sqlcore_bench_complete_task"),
                [
                    {"run_id": r, "step_slug": s, "task_index": i, "output": Jsonb(OUTPUT)}
                    for r, s, i, *_ in tasks
                ],
            )
        return
    reports = [
        {
            "run_id": str(r),
            "step_slug": s,
            "task_index": i,
            "attempt": attempt,
            "worker_id": str(WORKER_ID),
            "output": OUTPUT,
        }
        for r, s, i, attempt in tasks
    ]
    name = "setb_bench_report_set" if setup == "set" else "setb_bench_report_per_row"
    rows = conn.execute(test_query(name), {"reports": Jsonb(reports)}).fetchall()
    assert {row[0] for row in rows} == {"completed"}, rows


def jobs(conn: Any, setup: str, flow_slug: str, steps: int, n: int) -> float:
    """Backend CPU seconds to take n jobs through start, claim and report, a batch at a time."""
    before = backend_cpu(conn)
    start(conn, setup, flow_slug, n)
    for _step in range(steps):
        tasks = claim(conn, setup, flow_slug, n)
        assert len(tasks) == n, f"{setup}: claimed {len(tasks)} of {n}"
        report(conn, setup, tasks)
    return backend_cpu(conn) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="local server where the benchmark may create databases")
    parser.add_argument("-n", type=int, default=100, help="jobs per batch (and per chunk)")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per setup")
    parser.add_argument("--chain", action="store_true", help="3-step chain instead of one step")
    args = parser.parse_args()

    admin = admin_url(args.url)
    flow_slug, steps = ("bench3", 3) if args.chain else ("bench1", 1)
    suffix = uuid.uuid4().hex[:8]
    names = {s: f"bench_{s.replace('-', '_')}_{suffix}" for s in SETUPS}
    with connect(admin) as conn:
        for name in names.values():
            create_database(conn, name)
    urls = {setup: with_database(admin, name) for setup, name in names.items()}
    try:
        migrations.upgrade(urls["set"])
        migrations.upgrade(urls["per-row"])
        install_reference(urls["reference"], realtime="noop")
        for url in urls.values():
            prepare(url)
        conns = {setup: connect(url) for setup, url in urls.items()}
        conns["per-row"].execute(per_row_report_tasks().encode())
        version = conns["set"].execute(test_query("sqlcore_bench_server_version")).fetchone()
        print(
            f"PostgreSQL {version[0] if version else '?'}: {args.chunks} chunks of {args.n} jobs "
            f"({steps}-step flow) per setup; backend CPU per job"
        )
        vacuum = sql.SQL(test_query("sqlcore_bench_vacuum")).format(
            sql.Identifier(f"q_{flow_slug}")
        )
        for setup, conn in conns.items():  # warm caches and plans
            for _ in range(3):
                jobs(conn, setup, flow_slug, steps, args.n)
        seconds: dict[str, list[float]] = {s: [] for s in SETUPS}
        for chunk in range(args.chunks):
            order = SETUPS if chunk % 2 == 0 else tuple(reversed(SETUPS))
            for setup in order:
                conns[setup].execute(vacuum)
                seconds[setup].append(jobs(conns[setup], setup, flow_slug, steps, args.n))
        total = args.n * args.chunks
        for setup in SETUPS:
            print(
                f"{setup:>10}: {sum(seconds[setup]) / total * 1e6:7.1f} µs of backend CPU per job"
            )
        # Per-chunk CPU is counted in clock ticks: ratios of sums, and medians of chunk ratios.
        for peer in ("per-row", "reference"):
            ratio = sum(seconds["set"]) / sum(seconds[peer])
            chunks = [s / p for s, p in zip(seconds["set"], seconds[peer], strict=True) if p > 0]
            print(
                f"set/{peer}: {ratio:.2f}x (all chunks), "
                f"{statistics.median(chunks):.2f}x (median of chunks)"
            )
        for conn in conns.values():
            conn.close()
    finally:
        with connect(admin) as conn:
            for name in names.values():
                drop_database(conn, name)


if __name__ == "__main__":
    main()
