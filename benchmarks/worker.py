"""Benchmark: the pgflow-kombu worker beside Celery (Redis, RabbitMQ) and procrastinate, one run.

Every system runs the same no-op job with 4 concurrent slots: ours ``pgflow-kombu worker -c 4``
(thread pool), Celery 5 ``worker -P prefork -c 4`` on Redis and on RabbitMQ, procrastinate
``worker -c 4``. Measured, in this order, per system:

* enqueue: N jobs enqueued one by one, no worker running (ours durably: one commit each);
* drain: the worker started on that backlog, from its first probe job (on a queue of its own) to
  the backlog's last completion;
* end-to-end: N jobs enqueued one by one into the running worker, first enqueue to last completion;
* idle latency: 200 jobs one at a time on an idle worker, enqueue call to handler start (p50/p99);
* a 4-step diamond (a -> b, c -> d), M runs, drain and end-to-end (ours; Celery as a chord with a
  Redis result backend; procrastinate has no DAGs);
* ours only: the batched enqueue API (``Client.start_many``), and enqueue/end-to-end with an
  asynchronously committing client (``synchronous_commit=off``: as durable as Redis without
  persistence or RabbitMQ without confirms, i.e. a server crash may lose the last enqueues).

Completions are counted without polling: ours through the run-finished NOTIFY, the peers' jobs
increment a Redis counter (one extra Redis call per job for them). Prints a table and ratios.

    python benchmarks/worker.py [--url postgresql://...] [--jobs 5000] [--diamonds 1000]
                                [--latency-runs 200] [--systems ours,celery-redis,...] [--quick]

Without --url: PGFLOW_TEST_DATABASE_URL, else the embedded server of the checkout (.pgdata).
Needs Redis on 127.0.0.1:6379 and RabbitMQ (guest/guest) on 127.0.0.1:5672 for the peers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgflow_kombu import PgFlow  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("BENCH_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUN_TAG = os.environ.get("BENCH_TAG", "bench")  # keys and queues of one benchmark run
COUNT_KEY = f"{RUN_TAG}:done"
STAMP_KEY = f"{RUN_TAG}:stamps"

# -- ours ------------------------------------------------------------------------------------------

app = PgFlow()


@app.task(name="bench_noop")
def bench_noop(i: int = 0) -> None:
    return None


@app.task(name="bench_stamp")
def bench_stamp(i: int = 0) -> float:
    return time.time()


diamond = app.flow("bench_diamond")


@diamond.step
def top(run: int) -> int:
    return run


@diamond.step
def left(top: int) -> int:
    return top


@diamond.step
def right(top: int) -> int:
    return top


@diamond.step
def bottom(left: int, right: int) -> int:
    return left + right


# -- the peers' tasks (imported by their workers from this module) ---------------------------------


@functools.cache
def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL)


def _celery_app() -> Any:
    from celery import Celery

    broker = os.environ.get("BENCH_CELERY_BROKER", REDIS_URL)
    capp = Celery("bench", broker=broker, backend=REDIS_URL)
    capp.conf.update(
        task_default_queue=f"{RUN_TAG}_celery",
        worker_hijack_root_logger=False,
        result_expires=600,
        broker_connection_retry_on_startup=True,
    )

    @capp.task(name="c_noop", ignore_result=True, shared=False)
    def c_noop(i: int = 0) -> None:
        redis_client().incr(COUNT_KEY)

    @capp.task(name="c_stamp", ignore_result=True, shared=False, queue=f"{RUN_TAG}_celery_ready")
    def c_stamp(i: int = 0) -> None:
        redis_client().rpush(STAMP_KEY, json.dumps([i, time.time()]))

    @capp.task(name="c_top", shared=False)
    def c_top(i: int) -> int:
        return i

    @capp.task(name="c_side", shared=False)
    def c_side(value: int) -> int:
        return value

    @capp.task(name="c_bottom", shared=False)
    def c_bottom(values: list[int]) -> int:
        redis_client().incr(COUNT_KEY)
        return sum(values)

    return capp


def _procrastinate_app() -> Any:
    import procrastinate

    conninfo = os.environ.get("BENCH_PROC_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    papp = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @papp.task(name="p_noop", queue=f"{RUN_TAG}_proc")
    def p_noop(i: int = 0) -> None:
        redis_client().incr(COUNT_KEY)

    @papp.task(name="p_stamp", queue=f"{RUN_TAG}_proc_ready")
    def p_stamp(i: int = 0) -> None:
        redis_client().rpush(STAMP_KEY, json.dumps([i, time.time()]))

    return papp


# Only the process that runs them builds the peers' apps (kept cheap for our worker's import).
if os.environ.get("BENCH_ROLE") == "celery":
    celery_app = _celery_app()
if os.environ.get("BENCH_ROLE") == "procrastinate":
    proc_app = _procrastinate_app()


# -- measuring -------------------------------------------------------------------------------------


class Counter:
    """Completions seen so far, and a way to wait for a number of them."""

    def __init__(self, read: Callable[[], int], check: Callable[[], None] = lambda: None) -> None:
        self._read = read
        self._check = check  # raises when the jobs can no longer finish (their worker died)

    def read(self) -> int:
        return self._read()

    def wait_for(self, n: int, timeout: float = 600.0) -> tuple[float, float]:
        """Wait until ``n`` completions; returns (time of the first, time of the last)."""
        first = None
        deadline = time.monotonic() + timeout
        while True:
            done = self._read()
            now = time.time()
            if first is None and done >= 1:
                first = now
            if done >= n:
                return first or now, now
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done} of {n} completions within {timeout} s")
            self._check()
            time.sleep(0.002)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class Result(dict[str, Any]):
    pass


class System:
    name = ""
    has_diamond = True

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def start_worker(self, wait: bool = True) -> None:
        """Start the worker; with ``wait``, return once a job went through it."""

    def stop_worker(self) -> None: ...

    def reset(self) -> None: ...

    def counter(self) -> Counter:
        raise NotImplementedError

    def enqueue(self, i: int) -> None:
        raise NotImplementedError

    def enqueue_diamond(self, i: int) -> None:
        raise NotImplementedError

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        """Enqueue one stamp job and return when its handler started (epoch seconds)."""
        raise NotImplementedError


def spawn(command: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{RUN_TAG}-{log_name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Ours(System):
    name = "pgflow-kombu"

    def __init__(self, admin_url: str, *, pool: str = "threads") -> None:
        from pgflow_kombu.db.urls import with_database

        self.admin_url = admin_url
        self.dbname = f"{RUN_TAG}_ours_{os.getpid()}"
        self.url = with_database(admin_url, self.dbname)
        self.pool = pool
        self.process: subprocess.Popen[bytes] | None = None
        self._done = 0
        self._finished: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def setup(self) -> None:
        from pgflow_kombu.client import Client
        from pgflow_kombu.db import migrations
        from pgflow_kombu.db.admin import create_database, drop_database
        from pgflow_kombu.db.connect import connect

        with connect(self.admin_url) as conn:
            drop_database(conn, self.dbname)
            create_database(conn, self.dbname)
        migrations.upgrade(self.url)
        self.client = Client(self.url, pool_min_size=1, pool_max_size=2)
        separator = "&" if "?" in self.url else "?"
        self.async_client = Client(
            f"{self.url}{separator}options=-c%20synchronous_commit%3Doff",
            pool_min_size=1,
            pool_max_size=2,
        )
        for flow in app.flows.values():
            self.client.compile_flow(flow.shape())
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        from pgflow_kombu.db.connect import connect
        from pgflow_kombu.db.queries import query

        with connect(self.url) as conn:
            conn.execute(query("client.listen_runs"))
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    run_id, _, status = note.payload.partition(":")
                    with self._lock:
                        if status == "completed":
                            self._done += 1
                        event = self._finished.pop(run_id, None)
                    if event is not None:
                        event.set()

    def teardown(self) -> None:
        from pgflow_kombu.db.admin import drop_database
        from pgflow_kombu.db.connect import connect

        self.stop_worker()
        self._stop.set()
        self._listener.join(5)
        self.client.close()
        self.async_client.close()
        with connect(self.admin_url) as conn:
            drop_database(conn, self.dbname)

    def start_worker(self, wait: bool = True) -> None:
        command = [sys.executable, "-m", "pgflow_kombu", "--database-url", self.url, "worker"]
        command += ["-A", "benchmarks.worker:app", "-c", "4", "-P", self.pool, "-l", "warning"]
        self.process = spawn(command, {}, "ours")
        if wait:
            self.stamp(-1)

    def stop_worker(self) -> None:
        stop_process(self.process)
        self.process = None

    def reset(self) -> None:
        with self._lock:
            self._done = 0

    def counter(self) -> Counter:
        return Counter(lambda: self._done, self.check_worker)

    def check_worker(self) -> None:
        process = self.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"our worker exited with code {process.returncode}; see {RUN_TAG}-ours.log in "
                f"{os.environ.get('TMPDIR', '/tmp')}"
            )

    def enqueue(self, i: int) -> None:
        self.client.start_flow("bench_noop", {"i": i})

    def enqueue_async(self, i: int) -> None:
        self.async_client.start_flow("bench_noop", {"i": i})

    def enqueue_many(self, n: int, chunk: int = 500) -> None:
        for start in range(0, n, chunk):
            self.client.start_many("bench_noop", [{"i": i} for i in range(start, start + chunk)])

    def enqueue_diamond(self, i: int) -> None:
        self.client.start_flow("bench_diamond", i)

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        run_id = uuid.uuid4()
        event = threading.Event()
        with self._lock:
            self._finished[str(run_id)] = event
        self.client.start_flow("bench_stamp", {"i": i}, run_id=run_id)
        deadline = time.monotonic() + timeout
        while not event.wait(0.2):
            self.check_worker()
            if time.monotonic() > deadline:
                raise TimeoutError("stamp job did not finish")
        with self._lock:
            self._done -= 1  # not part of any count
        output = self.client.get_run(run_id).output
        return float(output["bench_stamp"])


class RedisCounted(System):
    """A peer whose jobs count themselves in Redis."""

    def reset(self) -> None:
        redis_client().delete(COUNT_KEY, STAMP_KEY)

    def counter(self) -> Counter:
        return Counter(lambda: int(redis_client().get(COUNT_KEY) or 0))

    def wait_stamp(self, i: int, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = redis_client().blpop([STAMP_KEY], timeout=1)
            if item is None:
                continue
            index, when = json.loads(item[1])
            if index == i:
                return float(when)
        raise TimeoutError("stamp job did not run")


class CeleryPeer(RedisCounted):
    def __init__(self, broker: str, label: str) -> None:
        self.broker = broker
        self.name = f"Celery+{label}"
        self.process: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        os.environ["BENCH_CELERY_BROKER"] = self.broker
        self.app = _celery_app()
        self.tasks = self.app.tasks
        self.queues = [self.app.conf.task_default_queue, f"{RUN_TAG}_celery_ready"]
        with self.app.connection_for_write() as conn:
            for name in self.queues:
                conn.default_channel.queue_declare(queue=name, durable=True, auto_delete=False)
                conn.default_channel.queue_purge(name)
        self.reset()

    def teardown(self) -> None:
        self.stop_worker()
        with self.app.connection_for_write() as conn:
            for name in self.queues:
                conn.default_channel.queue_purge(name)

    def start_worker(self, wait: bool = True) -> None:
        command = [sys.executable, "-m", "celery", "-A", "benchmarks.worker:celery_app", "worker"]
        queues = f"{self.app.conf.task_default_queue},{RUN_TAG}_celery_ready"
        command += ["-P", "prefork", "-c", "4", "-Q", queues]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
        self.process = spawn(
            command,
            {"BENCH_ROLE": "celery", "BENCH_CELERY_BROKER": self.broker},
            self.name.replace("+", "-"),
        )
        if wait:
            self.stamp(-1)

    def stop_worker(self) -> None:
        stop_process(self.process)
        self.process = None

    def enqueue(self, i: int) -> None:
        self.tasks["c_noop"].delay(i)

    def enqueue_diamond(self, i: int) -> None:
        from celery import chain, group

        t = self.tasks
        chain(t["c_top"].s(i), group(t["c_side"].s(), t["c_side"].s()), t["c_bottom"].s())()

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self.tasks["c_stamp"].delay(i)
        return self.wait_stamp(i, timeout)


class ProcrastinatePeer(RedisCounted):
    name = "procrastinate"
    has_diamond = False

    def __init__(self, admin_url: str) -> None:
        from pgflow_kombu.db.urls import to_libpq, with_database

        self.admin_url = admin_url
        self.dbname = f"{RUN_TAG}_proc_{os.getpid()}"
        self.url = to_libpq(with_database(admin_url, self.dbname))
        self.process: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        from pgflow_kombu.db.admin import create_database, drop_database
        from pgflow_kombu.db.connect import connect

        with connect(self.admin_url) as conn:
            drop_database(conn, self.dbname)
            create_database(conn, self.dbname)
        os.environ["BENCH_PROC_URL"] = self.url
        self.app = _procrastinate_app()
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.reset()

    def teardown(self) -> None:
        from pgflow_kombu.db.admin import drop_database
        from pgflow_kombu.db.connect import connect

        self.stop_worker()
        self.app.close()
        with connect(self.admin_url) as conn:
            drop_database(conn, self.dbname)

    def start_worker(self, wait: bool = True) -> None:
        command = [sys.executable, "-m", "procrastinate", "--app", "benchmarks.worker.proc_app"]
        command += ["worker", "-c", "4", "-q", f"{RUN_TAG}_proc,{RUN_TAG}_proc_ready"]
        self.process = spawn(
            command, {"BENCH_ROLE": "procrastinate", "BENCH_PROC_URL": self.url}, "procrastinate"
        )
        if wait:
            self.stamp(-1)

    def stop_worker(self) -> None:
        stop_process(self.process)
        self.process = None

    def enqueue(self, i: int) -> None:
        self.app.tasks["p_noop"].defer(i=i)

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self.app.tasks["p_stamp"].defer(i=i)
        return self.wait_stamp(i, timeout)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def measure(system: System, jobs: int, diamonds: int, latency_runs: int) -> Result:
    result = Result(name=system.name)
    system.setup()
    try:
        measure_jobs(system, result, jobs, latency_runs)
        if system.has_diamond and diamonds:
            measure_diamonds(system, result, diamonds)
        system.stop_worker()
        if isinstance(system, Ours):
            measure_enqueue_variants(system, result, jobs)
    finally:
        system.teardown()
    return result


def timed_drain(system: System, counter: Counter, n: int) -> float:
    """Start the worker on a backlog of n; seconds from when it ran a probe job (on a queue of
    its own, so not behind the backlog) or from its first completion, whichever came first
    (procrastinate takes jobs in id order across queues), to the backlog's last completion."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        system.start_worker(wait=False)
        waiting = pool.submit(counter.wait_for, n, 900.0)
        ready = system.stamp(-1, timeout=900)
        first, last = waiting.result()
    return last - min(ready, first)


def measure_jobs(system: System, result: Result, jobs: int, latency_runs: int) -> None:
    system.reset()
    began = time.time()
    for i in range(jobs):
        system.enqueue(i)
    result["enqueue"] = rate(jobs, time.time() - began)
    counter = system.counter()
    # Timed from when the worker runs a probe job (on a queue of its own, not behind the
    # backlog) to the backlog's last completion.
    result["drain"] = rate(jobs, timed_drain(system, counter, jobs))

    system.reset()
    began = time.time()
    for i in range(jobs):
        system.enqueue(i)
    _first, last = counter.wait_for(jobs)
    result["e2e"] = rate(jobs, last - began)

    latencies = []
    for i in range(latency_runs):
        time.sleep(0.02)
        began_at = time.time()
        started_at = system.stamp(i)
        latencies.append((started_at - began_at) * 1000)
    result["p50"] = statistics.median(latencies)
    result["p99"] = percentile(latencies, 99)

    if isinstance(system, Ours):
        system.reset()
        began = time.time()
        for i in range(jobs):
            system.enqueue_async(i)
        _first, last = counter.wait_for(jobs)
        result["e2e_async"] = rate(jobs, last - began)


def measure_diamonds(system: System, result: Result, diamonds: int) -> None:
    counter = system.counter()
    system.stop_worker()
    system.reset()
    for i in range(diamonds):
        system.enqueue_diamond(i)
    result["diamond_drain"] = rate(diamonds, timed_drain(system, counter, diamonds))
    system.reset()
    began = time.time()
    for i in range(diamonds):
        system.enqueue_diamond(i)
    _first, last = counter.wait_for(diamonds)
    result["diamond_e2e"] = rate(diamonds, last - began)


def measure_enqueue_variants(system: Ours, result: Result, jobs: int) -> None:
    began = time.time()
    system.enqueue_many(jobs)
    result["enqueue_batched"] = rate(jobs, time.time() - began)
    began = time.time()
    for i in range(jobs):
        system.enqueue_async(i)
    result["enqueue_async"] = rate(jobs, time.time() - began)


ROWS = [
    ("enqueue", "enqueue, one by one (jobs/s)"),
    ("enqueue_async", "  ours, client with synchronous_commit=off"),
    ("enqueue_batched", "  ours, batched API start_many (jobs/s)"),
    ("drain", "backlog drain (jobs/s)"),
    ("e2e", "end-to-end, one-by-one enqueue (jobs/s)"),
    ("e2e_async", "  ours, client with synchronous_commit=off"),
    ("p50", "idle start->handler p50 (ms)"),
    ("p99", "idle start->handler p99 (ms)"),
    ("diamond_drain", "4-step diamond, drain (runs/s)"),
    ("diamond_e2e", "4-step diamond, end-to-end (runs/s)"),
]


def fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key in ("p50", "p99") else f"{value:,.0f}"


def print_table(results: list[Result]) -> None:
    names = [r["name"] for r in results]
    width = max(len(label) for _, label in ROWS) + 2
    print()
    print("".ljust(width) + "".join(n.rjust(16) for n in names))
    for key, label in ROWS:
        cells = [fmt(r.get(key), key).rjust(16) for r in results]
        if any(c.strip() != "-" for c in cells):
            print(label.ljust(width) + "".join(cells))
    ours = next((r for r in results if r["name"] == "pgflow-kombu"), None)
    if ours is None:
        return
    print("\nratios, ours / peer (higher is better for rates, lower for latency):")
    for peer in results:
        if peer is ours:
            continue
        parts = []
        for key in ("enqueue", "drain", "e2e", "p50", "p99", "diamond_drain", "diamond_e2e"):
            if ours.get(key) and peer.get(key):
                parts.append(f"{key} {ours[key] / peer[key]:.2f}x")
        print(f"  vs {peer['name']}: " + ", ".join(parts))
    redis = next((r for r in results if r["name"] == "Celery+Redis"), None)
    print("\ntargets:")
    if redis and ours.get("e2e"):
        print(f"  end-to-end >= 1.5x Celery+Redis: {ours['e2e'] / redis['e2e']:.2f}x")
        if ours.get("e2e_async"):
            print(f"    (async-commit client: {ours['e2e_async'] / redis['e2e']:.2f}x)")
    print(f"  idle p50 <= 5 ms: {ours['p50']:.1f} ms; p99 <= 15 ms: {ours['p99']:.1f} ms")


def median_result(rounds: list[Result]) -> Result:
    """Each figure's median over the rounds that produced it."""
    merged = Result(name=rounds[0]["name"])
    for key, _label in ROWS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            merged[key] = statistics.median(values)
    return merged


def admin_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("PGFLOW_TEST_DATABASE_URL"):
        return os.environ["PGFLOW_TEST_DATABASE_URL"]
    from pgflow_kombu.db import embedded

    os.environ.setdefault(embedded.DATA_DIR_ENV, str(ROOT / ".pgdata"))
    return embedded.server_url(announce=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", help="PostgreSQL server (any database; the benchmark makes its own)"
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--diamonds", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument(
        "--systems",
        default="ours,celery-redis,celery-rabbitmq,procrastinate",
        help="comma-separated subset of ours,celery-redis,celery-rabbitmq,procrastinate",
    )
    parser.add_argument("--pool", default="threads", help="our worker's pool")
    parser.add_argument("--quick", action="store_true", help="500 jobs, 100 diamonds, 50 latency")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds, each measuring every system in turn; the table shows per-figure medians",
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.diamonds, args.latency_runs = 500, 100, 50
    server = admin_url(args.url)
    makers: dict[str, Callable[[], System]] = {
        "ours": lambda: Ours(server, pool=args.pool),
        "celery-redis": lambda: CeleryPeer(REDIS_URL, "Redis"),
        "celery-rabbitmq": lambda: CeleryPeer(RABBIT_URL, "RabbitMQ"),
        "procrastinate": lambda: ProcrastinatePeer(server),
    }
    names = [name.strip() for name in args.systems.split(",")]
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    for round_number in range(1, args.repeat + 1):
        # Rounds interleave the systems, so that a slow spell of the machine hits them alike.
        for name in names:
            system = makers[name]()
            print(f"round {round_number}: measuring {system.name} ...", file=sys.stderr, flush=True)
            try:
                result = measure(system, args.jobs, args.diamonds, args.latency_runs)
            except Exception as exc:
                print(f"  {system.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                result = Result(name=system.name)
            rounds[name].append(result)
            print(f"  {dict(result)}", file=sys.stderr, flush=True)
    results = [median_result(rounds[name]) for name in names]
    medians = f"; medians of {args.repeat} rounds" if args.repeat > 1 else ""
    print(
        f"\n{args.jobs} no-op jobs, {args.diamonds} diamonds, {args.latency_runs} latency runs; "
        f"{os.cpu_count()} CPUs; PostgreSQL at {server.split('@')[-1]}{medians}"
    )
    print_table(results)
    sys.stdout.flush()
    # Skip interpreter teardown: Celery's result objects complain when Redis goes away first.
    os._exit(0)


if __name__ == "__main__":
    main()
