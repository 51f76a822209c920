"""Benchmark: the pgflow-kombu worker beside Celery, procrastinate, pgqueuer and pgflow's own SQL.

Every system runs the same no-op job with 4 concurrent slots: ours ``pgflow-kombu worker -c 4``
(thread pool); Celery 5 ``worker -P prefork -c 4`` on Redis (without persistence, and a Redis of
its own with ``appendfsync always``), on RabbitMQ (without and with publisher confirms) and on our
``pgflow://`` transport; procrastinate ``worker -c 4``; pgqueuer ``pgq run`` with its defaults;
and the reference pgflow 0.8.1 SQL driven as its TypeScript worker drives it. Per system, in
this order: enqueue one by one from 4 producer threads, batched enqueue, enqueue one by one from
1 producer, the drain of that backlog, end to end with 1 and 4 producers (database CPU per job
on the 1-producer run), idle enqueue->handler latency, and a 4-step diamond flow (ours; Celery
as a chord). Prints a markdown table and the target ratios. Without ``--url`` it starts a
scratch PostgreSQL 15 cluster with default settings (pg_stat_statements preloaded).

    python benchmarks/worker.py [--url postgresql://...] [--jobs 5000] [--repeat 1]
        [--systems ours,celery-redis,...] [--scenarios enqueue,batch,drain,e2e,latency,diamond]

Needs Redis on 127.0.0.1:6379 and RabbitMQ (guest/guest) on 127.0.0.1:5672 for the peers,
redis-server for the fsync Redis, npm for the reference (fetched into .reference/ once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workerbench import report, servers  # noqa: E402
from benchmarks.workerbench.dbcpu import DbCpu  # noqa: E402
from benchmarks.workerbench.ours import Ours  # noqa: E402
from benchmarks.workerbench.peers import (  # noqa: E402
    CeleryOnPgflow,
    CeleryPeer,
    PgQueuerPeer,
    ProcrastinatePeer,
)
from benchmarks.workerbench.reference import ReferenceSql  # noqa: E402
from benchmarks.workerbench.scenarios import SCENARIOS, Options, Result, measure  # noqa: E402
from benchmarks.workerbench.system import System  # noqa: E402
from benchmarks.workerbench.tasks import (  # noqa: E402
    COUNT_KEY,
    REDIS_URL,
    STAMP_KEY,
    redis_client,
)

RABBIT_URL = os.environ.get("BENCH_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")
SYSTEMS = (
    "ours",
    "celery-redis",
    "celery-redis-fsync",
    "celery-rabbitmq",
    "celery-rabbitmq-confirm",
    "celery-pgflow",
    "procrastinate",
    "pgqueuer",
    "reference",
)


def makers(server: str, args: argparse.Namespace) -> dict[str, Callable[[], System]]:
    fsync_redis: list[str] = []

    def redis_fsync() -> System:
        if not fsync_redis:
            fsync_redis.append(servers.start_fsync_redis(args.fsync_redis_port))
        return CeleryPeer(fsync_redis[0], "Celery+Redis fsync", durable=True)

    return {
        "ours": lambda: Ours(server, pool=args.pool),
        "celery-redis": lambda: CeleryPeer(REDIS_URL, "Celery+Redis"),
        "celery-redis-fsync": redis_fsync,
        "celery-rabbitmq": lambda: CeleryPeer(RABBIT_URL, "Celery+RabbitMQ"),
        "celery-rabbitmq-confirm": lambda: CeleryPeer(
            RABBIT_URL, "Celery+RabbitMQ confirms", confirm=True, durable=True
        ),
        "celery-pgflow": lambda: CeleryOnPgflow(server),
        "procrastinate": lambda: ProcrastinatePeer(server),
        "pgqueuer": lambda: PgQueuerPeer(server),
        "reference": lambda: ReferenceSql(server),
    }


def median_result(rounds: list[Result]) -> Result:
    """Each figure's median over the rounds that produced it."""
    keys = {key for result in rounds for key in result}
    return {k: statistics.median(r[k] for r in rounds if k in r) for k in sorted(keys)}


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    picked = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in picked if item not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return picked


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="PostgreSQL server to use instead of a scratch cluster")
    parser.add_argument("--scratch-port", type=int, default=5444, help="scratch cluster's port")
    parser.add_argument("--fsync-redis-port", type=int, default=6391)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--diamonds", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=", ".join(SYSTEMS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    parser.add_argument("--pool", default="threads", help="our worker's pool")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (systems interleaved); medians are shown"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,000 jobs, 200 diamonds, 50 latency runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.diamonds, args.latency_runs = 1000, 200, 50
    args.system_list = parse_list(args.systems, SYSTEMS, "system")
    args.scenario_list = parse_list(args.scenarios, SCENARIOS, "scenario")
    return args


def describe(server: str, scratch: bool, dbcpu: DbCpu) -> str:
    info = dbcpu.server_info()
    where = (
        "a scratch cluster started by the benchmark"
        if scratch
        else server.rsplit("@", maxsplit=1)[-1]
    )
    return (
        f"PostgreSQL: {info['version'].split(' on ')[0]}, {where}; fsync={info['fsync']}, "
        f"synchronous_commit={info['synchronous_commit']}, autovacuum={info['autovacuum']}, "
        f"shared_buffers={info['shared_buffers']}, "
        f"shared_preload_libraries='{info['preload']}'"
        + ("" if dbcpu.postmaster else "; server CPU not readable from here")
    )


def main() -> None:
    args = arguments()
    server = args.url or servers.start_postgres(args.scratch_port)
    dbcpu = DbCpu(server)
    options = Options(args.jobs, args.diamonds, args.latency_runs, tuple(args.scenario_list))
    build = makers(server, args)
    began_at, load_before = time.gmtime(), os.getloadavg()[0]
    rounds: dict[str, list[Result]] = {name: [] for name in args.system_list}
    names: dict[str, str] = {}
    durable: dict[str, bool] = {}
    try:
        for round_number in range(1, args.repeat + 1):
            # Rounds interleave the systems, so that a slow spell of the machine hits them alike.
            for key in args.system_list:
                system = build[key]()
                names[key], durable[key] = system.name, system.durable
                print(f"round {round_number}: {system.name} ...", file=sys.stderr, flush=True)
                began = time.monotonic()
                try:
                    result = measure(system, options, dbcpu)
                except Exception as exc:
                    print(f"  {system.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    result = {}
                rounds[key].append(result)
                print(f"  {time.monotonic() - began:.0f} s: {result}", file=sys.stderr, flush=True)
        results = {key: median_result(rounds[key]) for key in args.system_list}
        print(
            f"\n{args.jobs} no-op jobs, {args.diamonds} diamonds, {args.latency_runs} latency "
            f"runs, concurrency 4"
            + (f"; medians of {args.repeat} rounds" if args.repeat > 1 else "")
        )
        print(
            f"{time.strftime('%Y-%m-%d %H:%M', began_at)}-{time.strftime('%H:%M UTC', time.gmtime())}"
            f"; {os.cpu_count()} CPUs, load average (1 min) {load_before:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end"
        )
        print(describe(server, args.url is None, dbcpu) + "\n")
        print(report.table(results, names, durable))
        ratios = report.targets(results, names, durable)
        if ratios:
            print("\n" + ratios)
        sys.stdout.flush()
    finally:
        dbcpu.close()
        servers.stop_servers()
        redis_client().delete(COUNT_KEY, STAMP_KEY)
    # Skip interpreter teardown: Celery's result objects complain when Redis goes away first.
    os._exit(0)


if __name__ == "__main__":
    main()
