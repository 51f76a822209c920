"""Soak: 100,000 no-op jobs through one ``pgflow-kombu worker``; its memory at start and end.

Jobs are enqueued in batches (``Client.start_many``) while the worker runs, keeping at most
``--window`` of them outstanding, and counted through the run-finished NOTIFY. The worker's
resident memory (its process and any pool children) is sampled after it served its first job
and then every 10% of the way; a flat line means no leak per job.

    python benchmarks/soak.py [--url postgresql://...] [--jobs 100000] [--pool threads]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.sql_core import admin_url  # noqa: E402
from benchmarks.workerbench.ours import Ours  # noqa: E402


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, in KiB (Linux /proc)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="PostgreSQL server (any database; the soak makes its own)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=5_000, help="most jobs outstanding")
    parser.add_argument("--chunk", type=int, default=1_000, help="jobs per start_many call")
    parser.add_argument("--pool", default="threads")
    args = parser.parse_args()

    system = Ours(admin_url(args.url), pool=args.pool)
    system.setup()
    try:
        system.start_worker()  # returns after a first job went through
        assert system.process is not None
        pid = system.process.pid
        samples = [(0, rss_kib(pid))]
        counter = system.counter()
        system.reset()
        began = time.perf_counter()
        enqueued = 0
        step = max(args.jobs // 10, 1)
        next_sample = step
        while True:
            done = counter.read()
            while enqueued < args.jobs and enqueued - done < args.window:
                n = min(args.chunk, args.jobs - enqueued)
                system.client.start_many("bench_noop", [{"i": i} for i in range(n)])
                enqueued += n
            if done >= next_sample:
                samples.append((done, rss_kib(pid)))
                print(
                    f"{done:>8} jobs  {time.perf_counter() - began:6.1f} s  rss {samples[-1][1] / 1024:7.1f} MiB",
                    flush=True,
                )
                while next_sample <= done:
                    next_sample += step
            if done >= args.jobs:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        system.stop_worker()
    finally:
        system.teardown()
    start, end = samples[0][1], samples[-1][1]
    print(
        f"\n{args.jobs} jobs in {elapsed:.0f} s ({args.jobs / elapsed:,.0f} jobs/s), "
        f"{args.pool} pool x 4"
    )
    print(
        f"worker RSS at start {start / 1024:.1f} MiB, at end {end / 1024:.1f} MiB "
        f"({(end - start) / 1024:+.1f} MiB)"
    )


if __name__ == "__main__":
    main()
