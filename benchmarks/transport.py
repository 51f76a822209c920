"""Raw kombu rates and latency: pgflow:// beside kombu's pgmq://, redis:// and amqp://, in one run.

For every transport, each run measures:

* publish: messages/s of one producer publishing N small JSON messages to one queue;
* consume+ack: messages/s of one consumer (prefetch ``--prefetch``) draining and acking them;
* idle latency: publish -> callback of a consumer that sits idle between messages (p50/p99).

Runs are interleaved across transports and the medians are printed, with ratios of pgflow:// to
each peer. Also measured for pgflow://: the cost of the wake-up NOTIFY (publishes with the queue's
trigger disabled), with one and with four publishing processes.

Usage::

    python benchmarks/transport.py [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--messages 5000] [--latency 200] [--runs 3] [--prefetch 10] [--only pgflow,redis]

The database URL names a server where the script may create databases (``pgflow_kombu_bench`` and
``pgflow_kombu_bench_pgmq``); Redis and RabbitMQ are expected on 127.0.0.1 (``--redis-url``,
``--amqp-url``). A peer that cannot be reached is reported and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue as queue_module
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import psycopg

import pgflow_kombu  # noqa: F401 - registers pgflow://
from pgflow_kombu.db import migrations
from pgflow_kombu.db.admin import create_database, drop_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.pgmq_setup import ensure_pgmq
from pgflow_kombu.db.urls import to_libpq, with_database
from pgflow_kombu.transport.urls import kombu_url

QUEUE = "bench"
BODY = {"task": "bench.noop", "args": [1, 2], "kwargs": {}, "pad": "x" * 64}


@dataclass
class Peer:
    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    database: str | None = None  # PostgreSQL peers: vacuumed between phases
    latency_samples: int | None = None  # fewer for the polling transports
    publish: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    error: str | None = None


def pg_url(url: str) -> str:
    return urlunsplit(urlsplit(to_libpq(url))._replace(scheme="postgresql"))


def fresh_database(admin_url: str, name: str) -> str:
    with connect(admin_url) as conn:
        drop_database(conn, name)
        create_database(conn, name)
    return with_database(admin_url, name)


def prepare_databases(admin_url: str) -> tuple[str, str]:
    ours = fresh_database(admin_url, "pgflow_kombu_bench")
    migrations.upgrade(ours)
    theirs = fresh_database(admin_url, "pgflow_kombu_bench_pgmq")
    with connect(theirs, autocommit=False) as conn, conn.transaction():
        ensure_pgmq(conn)
    return ours, theirs


def purge(peer: Peer) -> None:
    with kombu.Connection(peer.url, transport_options=peer.options) as conn:
        queue = kombu.Queue(QUEUE, routing_key=QUEUE)
        with conn.channel() as channel:
            bound = queue(channel)
            bound.declare()
            bound.purge()


def vacuum(peer: Peer) -> None:
    """VACUUM the queue tables, as autovacuum would between bursts (this server may run without)."""
    if peer.database is None:
        return
    with psycopg.connect(pg_url(peer.database), autocommit=True) as conn:
        for name in (QUEUE, f"{QUEUE}_latency"):
            if conn.execute("SELECT to_regclass(%s)", (f"pgmq.q_{name}",)).fetchone() != (None,):
                conn.execute(f"VACUUM pgmq.q_{name}")


def measure_publish(peer: Peer, count: int) -> float:
    queue = kombu.Queue(QUEUE, routing_key=QUEUE)
    with kombu.Connection(peer.url, transport_options=peer.options) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(BODY, routing_key=QUEUE, declare=[queue])  # warm up, declare
        start = time.perf_counter()
        for _ in range(count):
            producer.publish(BODY, routing_key=QUEUE)
        return count / (time.perf_counter() - start)


def measure_consume(peer: Peer, count: int, prefetch: int) -> float:
    queue = kombu.Queue(QUEUE, routing_key=QUEUE)
    acked = 0

    def on_message(body: Any, message: kombu.Message) -> None:
        nonlocal acked
        message.ack()
        acked += 1

    with kombu.Connection(peer.url, transport_options=peer.options) as conn:
        consumer = kombu.Consumer(
            conn, [queue], callbacks=[on_message], prefetch_count=prefetch, accept=["json"]
        )
        with consumer:
            conn.drain_events(timeout=10)  # the warm-up message, and a first batch
            start, first = time.perf_counter(), acked - 1
            while acked < count + 1:
                conn.drain_events(timeout=10)
            return (acked - 1 - first) / (time.perf_counter() - start)


def measure_latency(peer: Peer, samples: int) -> list[float]:
    queue = kombu.Queue(f"{QUEUE}_latency", routing_key=f"{QUEUE}_latency")
    received = threading.Event()
    stop = threading.Event()
    ready = threading.Event()
    arrivals: list[float] = []
    failures: list[BaseException] = []

    def on_message(body: Any, message: kombu.Message) -> None:
        arrivals.append(time.perf_counter())
        message.ack()
        received.set()

    def consume() -> None:
        try:
            with kombu.Connection(peer.url, transport_options=peer.options) as conn:
                consumer = kombu.Consumer(conn, [queue], callbacks=[on_message], accept=["json"])
                with consumer:
                    ready.set()
                    # A long drain timeout: kombu's pgmq:// long-polls only for waits >= 1 s.
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            conn.drain_events(timeout=2)
        except BaseException as exc:
            failures.append(exc)
            ready.set()

    with kombu.Connection(peer.url, transport_options=peer.options) as conn:
        with conn.channel() as channel:
            queue(channel).declare()
            queue(channel).purge()
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        ready.wait(30)
        producer = conn.Producer(serializer="json")
        producer.publish(BODY, routing_key=queue.name, declare=[queue])
        received.wait(30)
        latencies = []
        for _ in range(samples):
            received.clear()
            time.sleep(0.03)  # let the consumer go idle
            sent = time.perf_counter()
            producer.publish(BODY, routing_key=queue.name)
            if not received.wait(30):
                raise RuntimeError(f"{peer.name}: a message did not arrive within 30 s")
            latencies.append((arrivals[-1] - sent) * 1000)
        stop.set()
        producer.publish(BODY, routing_key=queue.name)  # ends the consumer's last drain
        thread.join(15)
    if failures:
        raise failures[0]
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _publisher_process(url: str, count: int, barrier: Any, results: Any) -> None:
    with kombu.Connection(url) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(BODY, routing_key=QUEUE, declare=[kombu.Queue(QUEUE)])
        barrier.wait()
        start = time.perf_counter()
        for _ in range(count):
            producer.publish(BODY, routing_key=QUEUE)
        results.put((start, time.perf_counter()))


def measure_parallel_publish(url: str, processes: int, count: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_publisher_process, args=(url, count // processes, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    spans: list[tuple[float, float]] = []
    while len(spans) < len(workers):
        try:
            spans.append(results.get(timeout=1))
        except queue_module.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                raise RuntimeError("a publishing process failed") from None
    for worker in workers:
        worker.join()
    return (count // processes) * processes / (max(e for _, e in spans) - min(s for s, _ in spans))


def set_wake_trigger(database_url: str, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    with psycopg.connect(pg_url(database_url), autocommit=True) as conn:
        conn.execute(f"ALTER TABLE pgmq.q_{QUEUE} {verb} TRIGGER pgflow_kombu_wake")


def notify_cost(ours_db: str, url: str, count: int, runs: int) -> list[tuple[str, float, float]]:
    rows = []
    for processes in (1, 4):
        with_trigger: list[float] = []
        without: list[float] = []
        for _ in range(runs):
            for enabled, bucket in ((True, with_trigger), (False, without)):
                set_wake_trigger(ours_db, enabled)
                vacuum(Peer("pgflow", url, database=ours_db))
                if processes == 1:
                    bucket.append(measure_publish(Peer("pgflow", url), count))
                else:
                    bucket.append(measure_parallel_publish(url, processes, count))
            set_wake_trigger(ours_db, True)
            purge(Peer("pgflow", url))
        rows.append(
            (
                f"{processes} publisher(s)",
                statistics.median(with_trigger),
                statistics.median(without),
            )
        )
    return rows


def run(args: argparse.Namespace) -> None:
    ours_db, pgmq_db = prepare_databases(args.database_url)
    peers = [
        Peer("pgflow://", kombu_url(ours_db), database=ours_db),
        Peer(
            "pgflow:// durable_acks",
            kombu_url(ours_db),
            {"durable_acks": True},
            database=ours_db,
        ),
        Peer(
            "pgmq://",
            "pgmq://postgres@localhost/postgres",
            {"init_extension": False, "conn_string": pg_url(pgmq_db)},
            latency_samples=min(args.latency, 60),
            database=pgmq_db,
        ),
        Peer(
            "pgmq:// use_notify",
            "pgmq://postgres@localhost/postgres",
            {"init_extension": False, "conn_string": pg_url(pgmq_db), "use_notify": True},
            latency_samples=min(args.latency, 60),
            database=pgmq_db,
        ),
        Peer("redis://", args.redis_url),
        Peer("amqp://", args.amqp_url),
    ]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        peers = [p for p in peers if p.name.split(":")[0] in wanted or p.name in wanted]
    for peer in peers:
        try:
            purge(peer)
        except Exception as exc:
            peer.error = f"{type(exc).__name__}: {exc}"
    live = [p for p in peers if p.error is None]
    for number in range(1, args.runs + 1):
        for peer in live:
            step(f"run {number}/{args.runs}: {peer.name}")
            purge(peer)
            vacuum(peer)
            peer.publish.append(measure_publish(peer, args.messages))
            vacuum(peer)
            peer.consume.append(measure_consume(peer, args.messages, args.prefetch))
            vacuum(peer)
            latencies = measure_latency(peer, peer.latency_samples or args.latency)
            peer.p50.append(percentile(latencies, 0.5))
            peer.p99.append(percentile(latencies, 0.99))
    notify = []
    if any(p.name == "pgflow://" for p in live):
        step("NOTIFY cost")
        notify = notify_cost(ours_db, live[0].url, args.messages, args.runs)
    report(peers, notify, args)


def step(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def report(peers: list[Peer], notify: list[tuple[str, float, float]], args: Any) -> None:
    med: Callable[[list[float]], float] = statistics.median
    print(
        f"\nkombu raw transports: {args.messages} messages, prefetch {args.prefetch}, "
        f"medians of {args.runs} runs (latency: {args.latency} samples, 60 for pgmq://)\n"
    )
    header = (
        f"| {'transport':<24} | {'publish msg/s':>13} | {'consume+ack msg/s':>17} "
        f"| {'idle p50 ms':>11} | {'idle p99 ms':>11} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for p in peers:
        if p.error:
            print(f"| {p.name:<24} | not measured: {p.error[:80]}")
            continue
        print(
            f"| {p.name:<24} | {med(p.publish):>13,.0f} | {med(p.consume):>17,.0f} "
            f"| {med(p.p50):>11.2f} | {med(p.p99):>11.2f} |"
        )
    ours = next((p for p in peers if p.name == "pgflow://" and not p.error), None)
    if ours is None:
        return
    print("\npgflow:// relative to each peer (publish x, consume+ack x, idle p50 x lower):")
    for p in peers:
        if p is ours or p.error:
            continue
        print(
            f"  vs {p.name:<24} publish {med(ours.publish) / med(p.publish):5.2f}x   "
            f"consume+ack {med(ours.consume) / med(p.consume):5.2f}x   "
            f"p50 {med(p.p50) / med(ours.p50):6.2f}x"
        )
    by_name = {p.name: p for p in peers if not p.error}
    print("\ntargets:")
    if "redis://" in by_name:
        ok = med(ours.consume) >= med(by_name["redis://"].consume)
        print(f"  consume+ack >= redis://         {'met' if ok else 'NOT met'}")
    if "pgmq://" in by_name:
        ok = med(ours.consume) >= 2 * med(by_name["pgmq://"].consume)
        print(f"  consume+ack >= 2x pgmq://       {'met' if ok else 'NOT met'}")
    ok = med(ours.p50) <= 5.0
    print(f"  idle p50 <= 5 ms                {'met' if ok else 'NOT met'}")
    if notify:
        print("\npgflow:// publish with and without the wake-up trigger (cost of NOTIFY):")
        for label, with_trigger, without in notify:
            print(
                f"  {label:<16} {with_trigger:>8,.0f} msg/s with, {without:>8,.0f} without "
                f"({with_trigger / without:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated: pgflow,pgmq,redis,amqp")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
