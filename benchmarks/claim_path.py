"""Benchmark: the worker's claim paths side by side, in one run.

``--source claim`` (the default: ``pgflow_kombu.read_and_claim`` reads the flow queues and claims
the tasks in one statement) against ``--source kombu`` (a read through the ``pgflow://`` kombu
transport, then ``pgflow_kombu.claim_tasks``), and optionally ``--source pgmq`` (``pgmq.read``,
then ``claim_tasks``). The worker is the command, ``-c 4`` threads as in benchmarks/worker.py,
serving its app (benchmarks/workerbench/tasks.py: no-op ``@app.task`` jobs). Per source, each on a fresh database, in
turns that alternate the order every round:

* drain: N jobs enqueued with ``start_many``, then the worker started; from its probe job (on a
  queue of its own) to the backlog's last completion;
* end-to-end: N jobs enqueued one by one into the running worker, first enqueue to last
  completion;
* statements during the drain, from pg_stat_statements (top-level statements, i.e. round trips
  the clients sent): the claim statements (reads and claims) per claimed job and their
  database time per job, and every statement per job (reports, heartbeats... included); the
  claim statements during the end-to-end run as well.

Prints each round, then medians per source and the ratios old/new (kombu/claim, pgmq/claim):
for round trips and database time a ratio above 1 means the new path sends/spends less; for
throughput, jobs/s of the new path over the old one (above 1: the new path is faster).

    python benchmarks/claim_path.py --url postgresql://postgres@127.0.0.1:5442/postgres \\
        [--jobs 3000] [--rounds 3] [--sources kombu,claim] [--concurrency 4]

The statement figures need pg_stat_statements loaded by the server
(``-c shared_preload_libraries=pg_stat_statements``; add ``-c pg_stat_statements.track_planning=on``
so that the database time of top-level statements includes their planning, as that of the
statements inside a function does); without it they are left out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workerbench.ours import Ours  # noqa: E402
from benchmarks.workerbench.scenarios import rate, timed_drain  # noqa: E402
from benchmarks.workerbench.tasks import RUN_TAG  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

NEW = "claim"


class Sourced(Ours):
    """Our worker command with one ``--source``, on a database of its own."""

    def __init__(self, admin: str, source: str, concurrency: int) -> None:
        super().__init__(admin)
        self.source = source
        self.concurrency = concurrency
        self.name = f"source-{source}"
        self.database = f"{RUN_TAG}_claim_{source}_{os.getpid()}"
        self.statements = False

    def setup(self) -> None:
        super().setup()
        try:
            with connect(self.url) as conn:
                conn.execute(test_query("bench_claim_extension"))
                conn.execute(test_query("bench_claim_reset"))
            self.statements = True
        except psycopg.Error as exc:
            print(f"  no statement figures: {exc}", file=sys.stderr)

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        at = command.index("-c")
        command[at + 1] = str(self.concurrency)
        return [*command, "--source", self.source], env

    def enqueue_backlog(self, n: int, chunk: int = 500) -> None:
        for start in range(0, n, chunk):
            self.enqueue_batch(range(start, min(n, start + chunk)))

    def reset_statements(self) -> None:
        if self.statements:
            with connect(self.url) as conn:
                conn.execute(test_query("bench_claim_reset"))

    def statement_figures(self) -> dict[str, tuple[int, float]]:
        """kind -> (calls, database ms) since the last reset."""
        if not self.statements:
            return {}
        with connect(self.url) as conn:
            rows = conn.execute(test_query("bench_claim_statements")).fetchall()
        return {kind: (int(calls), float(ms)) for kind, calls, ms in rows}


def measure(system: Sourced, jobs: int) -> dict[str, float]:
    result: dict[str, float] = {}
    system.setup()
    try:
        system.reset()
        system.enqueue_backlog(jobs)
        counter = system.counter()
        system.reset_statements()
        result["drain"] = rate(jobs, timed_drain(system, counter, jobs))
        figures = system.statement_figures()
        if figures:
            calls, ms = figures.get("claim", (0, 0.0))
            result["claim_trips"] = calls / jobs
            result["claim_ms"] = ms / jobs
            result["all_trips"] = sum(c for c, _ in figures.values()) / jobs
            result["all_ms"] = sum(m for _, m in figures.values()) / jobs
        system.reset()
        system.reset_statements()
        began = time.time()
        for i in range(jobs):
            system.enqueue(i)
        _first, last = counter.wait_for(jobs)
        result["e2e"] = rate(jobs, last - began)
        figures = system.statement_figures()
        if figures:
            result["e2e_claim_trips"] = figures.get("claim", (0, 0.0))[0] / jobs
            result["e2e_claim_ms"] = figures.get("claim", (0, 0.0))[1] / jobs
    finally:
        system.teardown()
    return result


ROWS = [
    ("drain", "backlog drain (jobs/s)", "new/old"),
    ("e2e", "end-to-end, one-by-one enqueue (jobs/s)", "new/old"),
    ("claim_trips", "claim round trips per job (drain)", "old/new"),
    ("claim_ms", "claim database ms per job (drain)", "old/new"),
    ("all_trips", "all statements per job (drain)", "old/new"),
    ("all_ms", "all statements' database ms per job (drain)", "old/new"),
    ("e2e_claim_trips", "claim round trips per job (end-to-end)", "old/new"),
    ("e2e_claim_ms", "claim database ms per job (end-to-end)", "old/new"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="PostgreSQL server (the benchmark makes its databases)")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", default="kombu,claim", help="of kombu,claim,pgmq")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    server = args.url or os.environ.get("PGFLOW_TEST_DATABASE_URL")
    if not server:
        parser.error("give --url (or set PGFLOW_TEST_DATABASE_URL)")
    sources = [s.strip() for s in args.sources.split(",")]
    if NEW not in sources or len(sources) < 2:
        parser.error(f"--sources must list {NEW!r} and at least one other source")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in sources}
    for number in range(1, args.rounds + 1):
        order = sources if number % 2 else sources[::-1]
        for source in order:
            print(f"round {number}: --source {source} ...", file=sys.stderr, flush=True)
            result = measure(Sourced(server, source, args.concurrency), args.jobs)
            results[source].append(result)
            shown = {k: round(v, 3) for k, v in result.items()}
            print(f"  {shown}", file=sys.stderr, flush=True)
    medians = {
        s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()
    }
    print(
        f"\n{args.jobs} no-op jobs, worker -c {args.concurrency}, {os.cpu_count()} CPUs, "
        f"PostgreSQL at {server.split('@')[-1]}; medians of {args.rounds} rounds"
    )
    others = [s for s in sources if s != NEW]
    header = f"{'':46}" + "".join(f"{s:>10}" for s in sources)
    header += "".join(f"{s + '/' + NEW:>14}" for s in others)
    print(header)
    for key, label, sense in ROWS:
        if key not in medians[NEW]:
            continue
        cells = "".join(f"{medians[s][key]:>10.3f}" for s in sources)
        ratios = "".join(f"{_ratio(medians[s][key], medians[NEW][key], sense):>14}" for s in others)
        print(f"{label:46}{cells}{ratios}")
    print("ratios: old/new for costs, new/old for throughput; above 1 favours the new path")


def _ratio(old: float, new: float, sense: str) -> Any:
    top, bottom = (new, old) if sense == "new/old" else (old, new)
    return f"{top / bottom:.2f}x" if bottom else "-"


if __name__ == "__main__":
    main()
