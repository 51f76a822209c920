"""Benchmark: starting a batch with idempotency keys against starting it without, and against a
loop of keyed single starts.

A scratch database (created and dropped here) with a one-step job. Each round times, side by
side on the same server, ``-n`` runs started by:

    plain       Client.start_many (pgflow_kombu.start_flows: one statement)
    keys new    Client.start_many(idempotency_keys=...) with keys never used (reserved and
                started in one statement: pgflow_kombu.start_flows_idempotent)
    keys used   the same batch again: every key used, nothing started
    loop        Client.start_flow(idempotency_key=...) once per input (a transaction each)

Prints each one's runs/s (wall clock, client included) and its time per run as a ratio to
``plain``, totals over ``--rounds`` rounds (the machine's speed drifts; the ratios are what to
read).

    python benchmarks/idempotent_batches.py [--url postgresql://...] [-n 500] [--rounds 5]

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgflow_kombu.client import Client  # noqa: E402
from pgflow_kombu.db import embedded, migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from pgflow_kombu.db.urls import with_database  # noqa: E402
from pgflow_kombu.flows import Flow  # noqa: E402

job = Flow("bench_idem_job")


@job.step
def work(run: int) -> int:
    return run


def server_url(given: str | None) -> str:
    if given:
        return given
    from_env = os.environ.get("PGFLOW_TEST_DATABASE_URL")
    if from_env:
        return from_env
    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(client: Client, n: int, rounds: int) -> dict[str, float]:
    """Seconds spent by each way of starting, over all rounds."""
    slug = job.slug
    inputs = [{"run": i} for i in range(n)]
    totals = dict.fromkeys(("plain", "keys new", "keys used", "loop"), 0.0)

    def loop() -> None:
        for data in inputs:
            client.start_flow(slug, data, idempotency_key=str(uuid.uuid4()))

    def keyed(keys: list[str | None]) -> Callable[[], object]:
        return lambda: client.start_many(slug, inputs, idempotency_keys=keys)

    for _ in range(rounds):
        batch = keyed([str(uuid.uuid4()) for _ in range(n)])
        totals["plain"] += timed(lambda: client.start_many(slug, inputs))
        totals["keys new"] += timed(batch)
        totals["keys used"] += timed(batch)  # the same keys again
        totals["loop"] += timed(loop)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL server URL (any database)")
    parser.add_argument("-n", type=int, default=500, help="runs per batch")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    admin = server_url(args.url)
    name = f"bench_idem_{uuid.uuid4().hex[:8]}"
    with connect(admin) as conn:
        create_database(conn, name)
    try:
        url = with_database(admin, name)
        migrations.upgrade(url)
        client = Client(url)
        try:
            client.compile_flow(job.shape())
            measure(client, 50, 1)  # warm-up
            totals = measure(client, args.n, args.rounds)
        finally:
            client.close()
        runs = args.n * args.rounds
        for way, seconds in totals.items():
            print(
                f"{way:10s} {runs / seconds:9.0f} runs/s   time per run / plain "
                f"{seconds / totals['plain']:.2f}"
            )
    finally:
        with connect(admin) as conn:
            drop_database(conn, name)


if __name__ == "__main__":
    main()
