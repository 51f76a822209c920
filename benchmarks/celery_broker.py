"""Celery on ``pgflow://`` beside Celery on ``redis://``: idle latency and throughput, one run.

Two Celery 5 workers (``-P prefork -c 4``, default settings: prefetch multiplier 4, early acks,
gossip, mingle and heartbeats on) run side by side, one per broker. For each, interleaved over
``--runs`` runs:

* throughput: one producer sends ``--tasks`` no-op tasks; tasks/s from the first send until the
  last task ran;
* idle latency: then one task at a time with the worker idle in between (``--idle`` seconds):
  the producer's send time to the time the task starts in a pool process (p50/p99);
* kombu alone: the idle latency of a plain kombu consumer on the same broker (as in
  ``benchmarks/transport.py``), so that what Celery adds on each broker shows apart from the
  broker's own latency on this (noisy) machine.

Tasks report back through Redis (the same for both brokers). Prints medians and the ratios of
Celery+pgflow:// to Celery+Redis. ``--async-publish`` adds a producer whose commits do not wait
for the disk (as durable as Redis without persistence), sending to the same pgflow:// worker.

Usage::

    python benchmarks/celery_broker.py [--database-url postgresql://postgres@127.0.0.1:5443/postgres]
        [--latency 200] [--tasks 5000] [--runs 3] [--async-publish] [--worker-flag=--without-...]

The database URL names a server where the script may create the database
``pgflow_kombu_bench_celery``; Redis (the peer broker, and where tasks report) is
``BENCH_REDIS_URL``, by default redis://127.0.0.1:6379/0. The workers import pgflow_kombu from
the ``PYTHONPATH`` given to the script first (to measure another version of the transport).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals

import pgflow_kombu  # registers pgflow://
from benchmarks import transport as raw_kombu
from pgflow_kombu.db import migrations
from pgflow_kombu.db.admin import create_database, drop_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import with_database
from pgflow_kombu.transport.urls import kombu_url

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "pgflow_kombu_bench_celery"
QUEUE = "bench_celery"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_celery", broker=os.environ.get("BENCH_BROKER", REDIS_URL))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@signals.worker_ready.connect
def say_which_code(**kwargs: Any) -> None:
    print(f"worker on {app.conf.broker_url.split(':')[0]}: {pgflow_kombu.__file__}", flush=True)


@functools.cache
def reporter() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.started")
def started(key: str) -> None:
    reporter().rpush(key, repr(time.time()))


@app.task(name="bench.noop")
def noop(key: str, total: int) -> None:
    if reporter().incr(key) == total:
        reporter().rpush(f"{key}:done", repr(time.time()))


@dataclass
class Peer:
    name: str
    broker: str
    producer_broker: str | None = None  # the producer's URL, when not the worker's
    own_worker: bool = True  # False: the previous peer's worker consumes what this one sends
    process: subprocess.Popen[bytes] | None = None
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    raw_p50: list[float] = field(default_factory=list)  # kombu alone on the same broker

    def start(self, log: Path, flags: list[str]) -> None:
        # A PYTHONPATH given to this script comes first (e.g. another version of pgflow_kombu);
        # the worker runs elsewhere than in the checkout, whose directory would come before it.
        path = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
        env = {**os.environ, "BENCH_BROKER": self.broker, "PYTHONPATH": os.pathsep.join(path)}
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.celery_broker:app",
            "worker",
            "-P",
            "prefork",
            "-c",
            "4",
            "-l",
            "WARNING",
            "-Q",
            QUEUE,
            "-n",
            f"{self.name.split(':')[0].lower()}-{uuid.uuid4().hex[:6]}@bench",
            *flags,
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=tempfile.gettempdir(), env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def producer_app(self) -> Celery:
        producer = Celery("bench_celery_producer", broker=self.producer_broker or self.broker)
        producer.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
        return producer


def wait_for(key: str, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Short waits: the Redis client's socket timeout would cut a long one.
        popped = reporter().blpop([key], timeout=1)
        if popped is not None:
            return float(popped[1])
    raise RuntimeError(f"no task reported on {key} within {timeout} s (see the worker log)")


def warm_up(producer: Celery) -> None:
    key = f"bench:{uuid.uuid4().hex}"
    for _ in range(5):
        producer.send_task("bench.started", (key,))
        wait_for(key, timeout=120)


def measure_latency(producer: Celery, samples: int, idle: float) -> list[float]:
    key = f"bench:{uuid.uuid4().hex}"
    latencies = []
    for _ in range(samples):
        time.sleep(idle)
        sent = time.time()
        producer.send_task("bench.started", (key,))
        latencies.append((wait_for(key) - sent) * 1000)
    return latencies


def measure_throughput(producer: Celery, tasks: int) -> float:
    key = f"bench:{uuid.uuid4().hex}"
    begin = time.time()
    with producer.producer_or_acquire() as publisher:
        for _ in range(tasks):
            producer.send_task("bench.noop", (key, tasks), producer=publisher)
    done = wait_for(f"{key}:done", timeout=600)
    reporter().delete(key)
    return tasks / (done - begin)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def prepare_database(admin_url: str) -> str:
    with connect(admin_url) as conn:
        drop_database(conn, DATABASE)
        create_database(conn, DATABASE)
    url = with_database(admin_url, DATABASE)
    migrations.upgrade(url)
    return url


def run(args: argparse.Namespace) -> None:
    database = prepare_database(args.database_url)
    peers = [Peer("Celery+pgflow://", kombu_url(database)), Peer("Celery+Redis", REDIS_URL)]
    if args.async_publish:
        # As durable as Redis without persistence: the publishing commit does not wait for the
        # disk (a libpq option in the producer's URL; the worker is the first peer's).
        joiner = "&" if "?" in database else "?"
        unsafe = kombu_url(f"{database}{joiner}options=-c%20synchronous_commit%3Doff")
        peers.insert(1, Peer("  async publish", peers[0].broker, unsafe, own_worker=False))
    reporter().delete(QUEUE)
    log = Path(args.log)
    producers = {}
    try:
        for peer in peers:
            if peer.own_worker:
                peer.start(log, args.worker_flag)
        for peer in peers:
            producers[peer.name] = peer.producer_app()
            warm_up(producers[peer.name])
        for number in range(1, args.runs + 1):
            for peer in peers:
                step(f"run {number}/{args.runs}: {peer.name}")
                # Latency right after a burst, as a worker sees it between bursts.
                peer.rate.append(measure_throughput(producers[peer.name], args.tasks))
                latencies = measure_latency(producers[peer.name], args.latency, args.idle)
                peer.p50.append(percentile(latencies, 0.5))
                peer.p99.append(percentile(latencies, 0.99))
                if peer.own_worker:
                    raw = raw_kombu.measure_latency(raw_kombu.Peer(peer.name, peer.broker), 100)
                    peer.raw_p50.append(percentile(raw, 0.5))
                step(
                    f"  {peer.rate[-1]:,.0f} tasks/s, idle p50 {peer.p50[-1]:.2f} ms, "
                    f"p99 {peer.p99[-1]:.2f} ms"
                )
    finally:
        for peer in peers:
            peer.stop()
        redis_producer = producers.get(peers[-1].name)
        if redis_producer is not None:  # leave no queue or binding behind in Redis
            with redis_producer.connection_for_write() as conn:
                channel: Any = conn.default_channel
                channel.queue_delete(QUEUE)
                # The bindings of Celery's exchange of the same name (kombu's Redis key names).
                prefixes = (channel.keyprefix_queue, channel.keyprefix_binding_permanent)
                channel.client.delete(*(prefix % QUEUE for prefix in prefixes))
        for producer in producers.values():
            producer.close()
    report(peers, args)


def step(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def report(peers: list[Peer], args: argparse.Namespace) -> None:
    med = statistics.median
    print(
        f"\nCelery 5 workers (prefork, concurrency 4, defaults), medians of {args.runs} runs; "
        f"latency: {args.latency} tasks sent {args.idle * 1000:.0f} ms apart; "
        f"throughput: {args.tasks} no-op tasks, one producer; worker options: "
        f"{' '.join(args.worker_flag) or 'none'}\n"
    )
    print(
        f"| {'broker':<18} | {'idle p50 ms':>11} | {'idle p99 ms':>11} | {'tasks/s':>9} "
        f"| {'kombu alone p50 ms':>18} |"
    )
    print(f"|{'-' * 20}|{'-' * 13}|{'-' * 13}|{'-' * 11}|{'-' * 20}|")
    for p in peers:
        raw = f"{med(p.raw_p50):.2f}" if p.raw_p50 else "-"
        print(
            f"| {p.name:<18} | {med(p.p50):>11.2f} | {med(p.p99):>11.2f} | {med(p.rate):>9,.0f} "
            f"| {raw:>18} |"
        )
    ours, redis_peer = peers[0], peers[-1]
    print(
        f"\nCelery+pgflow:// vs Celery+Redis: idle p50 {med(ours.p50) / med(redis_peer.p50):.2f}x "
        f"(lower is better), throughput {med(ours.rate) / med(redis_peer.rate):.2f}x"
    )
    print(
        "  what Celery adds to kombu's own idle p50: "
        f"{med(ours.p50) - med(ours.raw_p50):.2f} ms on pgflow://, "
        f"{med(redis_peer.p50) - med(redis_peer.raw_p50):.2f} ms on Redis"
    )
    print(f"  idle p50 <= 3 ms:               {'met' if med(ours.p50) <= 3.0 else 'NOT met'}")
    met = med(ours.rate) >= med(redis_peer.rate)
    print(f"  throughput >= Celery+Redis:     {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5443/postgres"
        ),
    )
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--idle", type=float, default=0.05, help="seconds between latency tasks")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--async-publish",
        action="store_true",
        help="also Celery+pgflow:// with a producer whose commits do not wait for the disk",
    )
    parser.add_argument(
        "--worker-flag",
        action="append",
        default=[],
        help="an option for both workers, e.g. --worker-flag=--without-heartbeat (repeatable)",
    )
    parser.add_argument("--log", default="/tmp/pgflow-kombu-bench-celery.log")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
