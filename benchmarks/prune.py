"""Benchmark: a worker's throughput and latency with and without a concurrent prune.

A scratch database (created and dropped here) is filled with many finished runs, set-based
(``--runs``, default 200k: each run 2 step states, 2 tasks and 2 archived messages, so about 7
rows per run), all finished 10 days ago. A worker (threads, ``--concurrency`` slots, the
pgflow:// transport) serves a one-step job. Three phases, each measuring:

* drain: ``--jobs`` jobs started at once (start_many), then time until all completed
  (throughput, jobs/s);
* latency: jobs started one at a time at ``--rate`` per second for ``--seconds`` s; each job's
  start-to-completion time from the server's timestamps (p50, p99).

Phase 1 without pruning; phase 2 while the worker's retention code (``--retention 7d``: a
try-lock, then batches of ``--batch`` runs, ``--pause`` s apart) prunes in a thread (the phase
starts once pruning is under way; the prune's own duration and whether it outlasted the phase
are printed); phase 3 without pruning again. Then the ratios of phase 2 to phases 1 and 3 (the
shared machine's speed drifts between phases).

    python benchmarks/prune.py [--url postgresql://...] [--runs 200000] [--jobs 3000]
                               [--rate 50] [--seconds 20] [--concurrency 4] [--batch 500]
                               [--pause 0.05]

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.db import embedded, migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402
from pgflow_kombu.worker import Worker  # noqa: E402
from pgflow_kombu.worker.retention import Retention  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

job = Flow("bench_prune_job")


@job.step
def work(run: int) -> int:
    return run


old = Flow("bench_prune_old")


@old.step
def a(run: Any) -> int:
    return 1


@old.step
def b(a: int) -> int:
    return a


FILL_CHUNK = 50_000


def admin_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return os.environ["PGFLOW_TEST_DATABASE_URL"]
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def fill(url: str, runs: int) -> float:
    started = time.perf_counter()
    with connect(url) as conn:
        done = 0
        while done < runs:
            n = min(FILL_CHUNK, runs - done)
            conn.execute(test_query("bench_prune_fill"), {"n": n, "first_msg": 10**12 + 2 * done})
            done += n
        conn.execute(test_query("bench_prune_analyze"))
    return time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def completed(conn: Any) -> int:
    return int(conn.execute(test_query("bench_prune_completed")).fetchone()[0])


def measure(client: Client, conn: Any, args: argparse.Namespace) -> dict[str, float]:
    """One phase: drain a backlog, then steady-rate latency."""
    before = completed(conn)
    begin = time.perf_counter()
    client.start_many(job, list(range(args.jobs)))
    while completed(conn) < before + args.jobs:
        time.sleep(0.05)
    drain = time.perf_counter() - begin

    run_ids = []
    interval = 1.0 / args.rate
    next_at = time.perf_counter()
    end = next_at + args.seconds
    while next_at < end:
        run_ids.append(client.start_flow(job, 0))
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    for run_id in run_ids:
        client.wait(run_id, timeout=120)
    latencies = [
        row[0] for row in conn.execute(test_query("bench_prune_latencies"), {"run_ids": run_ids})
    ]
    return {
        "throughput": args.jobs / drain,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def measure_while_pruning(
    url: str, client: Client, conn: Any, args: argparse.Namespace
) -> dict[str, float]:
    """Phase 2: the same measurement while the worker's retention code (advisory lock, batches
    of ``--batch``, ``--pause`` s between them) prunes every old run from another thread."""
    retention = Retention(url, timedelta(days=7), batch_size=args.batch, pause=args.pause)
    outcome: dict[str, Any] = {}

    def prune() -> None:
        begin = time.perf_counter()
        outcome["pruned"] = retention.prune_once()
        outcome["seconds"] = time.perf_counter() - begin

    thread = threading.Thread(target=prune)
    thread.start()
    time.sleep(1.0)  # pruning under way
    busy = measure(client, conn, args)
    outlasted = thread.is_alive()
    print(f"with prune:    {busy}", flush=True)
    thread.join()
    retention.stop()
    assert outcome["pruned"], "another process held the retention lock"
    seconds = outcome["seconds"]
    print(
        f"prune: {retention.pruned_runs} runs and {retention.pruned_messages} archived "
        f"messages in {seconds:.1f} s ({retention.pruned_runs / seconds:.0f} runs/s, batches of "
        f"{args.batch}, {args.pause:g} s apart); "
        f"{'still running when' if outlasted else 'done before'} the phase ended",
        flush=True,
    )
    sizes = conn.execute(test_query("bench_prune_sizes")).fetchone()
    print("rows left: runs, tasks, archived =", sizes)
    return busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an admin URL of the server (a database is created)")
    parser.add_argument("--runs", type=int, default=200_000, help="finished runs to prune")
    parser.add_argument("--jobs", type=int, default=3000, help="jobs of the drain measurement")
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s of the latency part")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency part")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="prune batch size")
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds between batches (the worker's: 0.05)"
    )
    args = parser.parse_args()

    admin = admin_url(args.url)
    name = f"bench_prune_{uuid.uuid4().hex[:8]}"
    with connect(admin) as conn:
        create_database(conn, name)
    url = with_database(admin, name)
    try:
        migrations.upgrade(url)
        client = Client(url, pool_max_size=4)
        client.compile_flow(job.shape())
        client.compile_flow(old.shape())
        seconds = fill(url, args.runs)
        print(f"filled {args.runs} finished runs in {seconds:.1f} s", flush=True)
        with connect(url) as conn:
            print(
                "rows: runs, tasks, archived =",
                conn.execute(test_query("bench_prune_sizes")).fetchone(),
                flush=True,
            )

        worker = Worker({job.slug: job}, url, concurrency=args.concurrency)
        worker.start()
        try:
            with connect(url) as conn:
                measure(
                    client, conn, argparse.Namespace(**{**vars(args), "jobs": 200, "seconds": 2.0})
                )  # warm-up
                before = measure(client, conn, args)
                print(f"without prune: {before}", flush=True)
                busy = measure_while_pruning(url, client, conn, args)
                after = measure(client, conn, args)
                print(f"without prune, after it: {after}", flush=True)
        finally:
            worker.stop(10)
            client.close()
        # The machine's speed drifts: the prune phase against the phases before and after it.
        for label, base in (("before", before), ("after", after)):
            print(
                f"ratio with prune / without ({label}): throughput "
                f"{busy['throughput'] / base['throughput']:.2f}, "
                f"p50 {busy['p50_ms'] / base['p50_ms']:.2f}, "
                f"p99 {busy['p99_ms'] / base['p99_ms']:.2f}"
            )
    finally:
        with connect(admin) as conn:
            drop_database(conn, name)


if __name__ == "__main__":
    main()
