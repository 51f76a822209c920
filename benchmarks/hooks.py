"""Benchmark: what hooks cost the worker, with none registered and with metrics subscribed.

Two measurements, each printed with its ratio:

* drain: N runs of a no-op one-step flow started in one transaction, then an in-process worker
  (thread pool, 4 slots) drains them; rounds alternate between a worker with no hooks, one with
  Prometheus metrics subscribed (``WorkerMetrics``: every event), and one with metrics and a
  Python callback on every event; the best round of each is kept;
* dispatch: the worker-side calls made per task with no hook registered (``task_started``,
  one settled report), in a loop, against the same loop doing nothing (ns per task).

    python benchmarks/hooks.py [--url postgresql://...] [--runs 3000] [--rounds 3]

The URL is an admin URL (PGFLOW_TEST_DATABASE_URL by default): a scratch database is created
and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402
from pgflow_kombu.observability.hooks import EVENTS, Hooks  # noqa: E402
from pgflow_kombu.worker import Worker  # noqa: E402
from pgflow_kombu.worker.events import WorkerEvents  # noqa: E402
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome  # noqa: E402

noop = Flow("bench_hooks_noop")


@noop.step
def nothing(run: int) -> int:
    return run


def drain(url: str, client: Client, runs: int, mode: str) -> float:
    client.start_many(noop, list(range(runs)))
    worker = Worker({noop.slug: noop}, url, concurrency=4, heartbeat_interval=1.0)
    if mode != "none":
        from pgflow_kombu.observability.metrics import WorkerMetrics

        WorkerMetrics().subscribe(worker.hooks)
    if mode == "metrics+callback":
        seen = [0]

        def count(event: object) -> None:
            seen[0] += 1

        for name in EVENTS:
            worker.hooks.on(name, count)
    started = time.perf_counter()
    worker.start()
    while worker.stats.completed < runs:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop(10)
    return runs / elapsed


def dispatch(n: int) -> tuple[float, float]:
    events = WorkerEvents(Hooks(Hooks()))  # a worker's hooks over an app's, none registered
    task = ClaimedTask("f", str(uuid.uuid4()), "s", 0, 1, None, 1, 30.0, str(uuid.uuid4()))
    settled: list[Any] = [(Outcome(task, output=1), "completed", None, None)]
    t0 = time.perf_counter_ns()
    for _ in range(n):
        events.task_started(task)
        events.settled(settled)
    with_calls = (time.perf_counter_ns() - t0) / n
    t0 = time.perf_counter_ns()
    for _ in range(n):
        pass
    empty = (time.perf_counter_ns() - t0) / n
    return with_calls, empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("PGFLOW_TEST_DATABASE_URL"))
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set PGFLOW_TEST_DATABASE_URL")
    name = f"bench_hooks_{uuid.uuid4().hex[:8]}"
    with connect(args.url) as admin:
        create_database(admin, name)
    url = with_database(args.url, name)
    try:
        migrations.upgrade(url)
        client = Client(url)
        client.compile_flow(noop.shape())
        modes = ("none", "metrics", "metrics+callback")
        best = dict.fromkeys(modes, 0.0)
        drain(url, client, min(args.runs, 500), "none")  # warm-up
        for _ in range(args.rounds):
            for mode in modes:
                best[mode] = max(best[mode], drain(url, client, args.runs, mode))
        client.close()
    finally:
        with connect(args.url) as admin:
            drop_database(admin, name)
    per_task, empty = dispatch(200_000)
    print(f"drain of {args.runs} no-op runs, thread pool x 4, best of {args.rounds} rounds:")
    for mode in modes:
        print(
            f"  {mode:<18} {best[mode]:8.0f} runs/s  ratio to none {best[mode] / best['none']:.3f}"
        )
    print(
        f"hook dispatch with none registered: {per_task - empty:.0f} ns per task "
        f"(start + one settled report; empty loop {empty:.0f} ns)"
    )


if __name__ == "__main__":
    main()
