"""Benchmark: scale-out. 1, 2 and 4 worker processes on "hosts" of their own, one PostgreSQL.

Starts (or reuses) a scratch PostgreSQL 15 cluster with default settings plus
``pg_stat_statements`` and ``listen_addresses='*'`` (port 5446, data in /tmp/pg-scale-out), and
for each worker count: a fresh database cloned from a migrated template, the workers started
and registered (each ``pgflow-kombu`` worker process in a network namespace ``pks-...`` of its
own, reaching the server over a veth pair, or plain local processes when namespaces are
unavailable or ``--plain``), then two backlogs, one after the other, each committed in one
transaction while the workers wait:

* ``jobs``: N runs of a one-step no-op job;
* ``dag``:  M runs of a 4-step diamond (a -> b, c -> d), 4 tasks per run.

Per phase it prints throughput (from the backlog's commit to its last completion, database
clock), the ratio to 1 worker, the CPU the database used (from /proc: the postmaster and its
children, exited ones included) in cores and per task, the workers' CPU, how busy the whole
machine was, the most backends seen waiting on a lock, and per run: statement time
(pg_stat_statements, top level), WAL bytes, records and full-page images. When "db cores" nears
the machine's cores, the database is the limit; when "machine busy" is near 100 % while it is
not, the machine is (the workers, or other processes). Then the connections each worker holds,
by part, from pg_stat_activity, and the tables with the most churn and the top statements of the
last phase.

    python benchmarks/scale_out.py [--workers 1,2,4] [--jobs 6000] [--dags 1500]
                                   [--concurrency 4] [--plain] [--port 5446] [--keep-server]
                                   [--routes direct,pgbouncer] [--pgbouncer-port 6446]

``--routes`` says how the workers reach the server: ``direct``, and/or ``pgbouncer``: through a
PgBouncer in transaction pooling mode (``/usr/sbin/pgbouncer``, pool size 20 per database)
with ``PGFLOW_POLL_ONLY=1``, whose connection census shows the server side of the pooler. With
both, every worker count runs both routes one after the other (fresh databases), and the
``vs direct`` column compares them side by side.

``serve`` (internal) is the worker process: ``scale_out.py serve URL CONCURRENCY``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pgflow_kombu import PgFlow  # noqa: E402
from pgflow_kombu.db import migrations  # noqa: E402
from pgflow_kombu.db.admin import create_database, database_exists, drop_database  # noqa: E402
from pgflow_kombu.db.connect import connect  # noqa: E402
from tests.support.netns import NetNamespace  # noqa: E402
from tests.support.netns import unavailable_reason as netns_unavailable  # noqa: E402
from tests.support.pgbouncer import PgBouncer  # noqa: E402
from tests.support.sql import test_query  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TEMPLATE = "scale_out_template"
JOB, DAG = "scale_noop", "scale_dag"
TICK = os.sysconf("SC_CLK_TCK")
BENCH_APP = "scale-out-benchmark"
# Backends report WAL counters to pg_stat_wal about once a second while busy: let them settle.
STATS_SETTLE = 2.0
ROLES = {  # application_name (and what the connection last ran) -> the part of the worker
    "pgflow-kombu-claims": "claims",
    "pgflow-kombu-reporter": "reports",
    "pgflow-kombu-heartbeat": "heartbeat",
    "pgflow-kombu-scheduler": "scheduler",
    "pgflow-kombu-retention": "retention",
}


def build_app(url: str) -> PgFlow:
    app = PgFlow(url)

    @app.task(name=JOB)
    def noop(i: int = 0) -> None:
        return None

    dag = app.flow(DAG)

    @dag.step
    def a(run: int) -> int:
        return run

    @dag.step
    def b(a: int) -> int:
        return a + 1

    @dag.step
    def c(a: int) -> int:
        return a + 2

    @dag.step
    def d(b: int, c: int) -> int:
        return b + c

    return app


def serve(url: str, concurrency: int) -> None:
    from pgflow_kombu.worker import Worker

    app = build_app(url)
    sys.exit(Worker(app.flows, url, concurrency=concurrency, prefetch=4 * concurrency).run())


# -- the scratch server --------------------------------------------------------------------------


@dataclass
class Server:
    data: Path
    port: int
    started_here: bool = False

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str, host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{dbname}"

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"])
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 10.213.0.0/16 trust  # the benchmark's namespaces\n")
        if (self.data / "postmaster.pid").exists():
            return  # running already (left by --keep-server)
        options = f"-p {self.port} -k /tmp -c listen_addresses='*' "
        options += "-c shared_preload_libraries=pg_stat_statements"
        log = f"{self.data}.log"
        run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])
        self.started_here = True

    def stop(self) -> None:
        run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


def run(command: list[str]) -> None:
    if os.geteuid() == 0 and Path(command[0]).parent == PG_BIN:  # the server refuses root
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout}")


# -- CPU from /proc ------------------------------------------------------------------------------


def _ticks(pid: int, children_too: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
    ticks = int(fields[11]) + int(fields[12])
    if children_too:  # children that ended and were waited for
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def database_cpu(postmaster: int) -> float:
    """CPU seconds used so far by the postmaster and its children (the ended ones included)."""
    total = _ticks(postmaster, children_too=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            after = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(after[1]) == postmaster:
                total += int(after[11]) + int(after[12])
    return total / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK, sum(values) / TICK


# -- workers -------------------------------------------------------------------------------------


@dataclass
class Host:
    """Where one worker runs: a network namespace (its own address) or this host."""

    ns: NetNamespace | None = None

    def command(self, argv: list[str]) -> list[str]:
        return [*self.ns.exec_prefix, *argv] if self.ns is not None else argv

    def server_host(self) -> str:
        return self.ns.host_ip if self.ns is not None else "127.0.0.1"

    def close(self) -> None:
        if self.ns is not None:
            self.ns.delete()


@dataclass
class Workers:
    bouncer: PgBouncer | None = None  # the route: through this pooler, else direct
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cpu(self) -> float:
        return sum(_ticks(p.pid, children_too=True) for p in self.procs) / TICK

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_workers(
    hosts: list[Host], server: Server, db: str, concurrency: int, bouncer: PgBouncer | None
) -> Workers:
    workers = Workers(bouncer)
    logs = Path("/tmp/scale-out-logs")
    logs.mkdir(exist_ok=True)
    for i, host in enumerate(hosts):
        url = server.url(db, host.server_host())
        if bouncer is not None:
            url = bouncer.url_for(url, host.server_host())
        argv = [sys.executable, str(Path(__file__).resolve()), "serve", url, str(concurrency)]
        log = (logs / f"{db}-{i}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PGAPPNAME", None)  # the benchmark's own name (see main)
        if bouncer is not None:
            env["PGFLOW_POLL_ONLY"] = "1"
        workers.procs.append(
            subprocess.Popen(host.command(argv), stdout=log, stderr=subprocess.STDOUT, env=env)
        )
    return workers


def wait_registered(conn: Any, workers: Workers, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in workers.procs):
            raise SystemExit("a worker exited at start: see /tmp/scale-out-logs/")
        if conn.execute(test_query("scale_workers_alive")).fetchone()[0] >= expected:
            return
        time.sleep(0.2)
    raise SystemExit(f"workers did not register within {timeout} s")


# -- one phase -----------------------------------------------------------------------------------


@dataclass
class Phase:
    route: str
    workload: str
    workers: int
    runs: int
    tasks: int
    seconds: float  # the backlog's commit to its last completion (database clock)
    window: float  # the same, on this process's clock: between the CPU samples
    enqueue_db_cpu: float  # database CPU seconds of the enqueue transaction
    db_cpu: float  # database CPU seconds while the workers drained the backlog
    workers_cpu: float
    machine_busy: float
    lock_waiters: int
    exec_ms: float
    wal_bytes: int
    wal_records: int
    wal_fpi: int


def measure(
    conn: Any, app: PgFlow, server: Server, workers: Workers, flow: str, runs: int, tasks: int
) -> Phase:
    inputs: list[Any] = [{"i": i} for i in range(runs)] if flow == JOB else list(range(runs))
    time.sleep(STATS_SETTLE)
    conn.execute(test_query("scale_statements_reset"))
    wal0 = conn.execute(test_query("scale_wal")).fetchone()
    before_enqueue = database_cpu(server.postmaster_pid())
    app.client.start_many(flow, inputs)  # one transaction: the backlog appears at once
    committed = conn.execute(test_query("scale_clock")).fetchone()[0]
    began = time.monotonic()
    db0, work0, (busy0, all0) = database_cpu(server.postmaster_pid()), workers.cpu(), machine_busy()
    waiters = 0
    while True:
        done, failed, last = conn.execute(
            test_query("scale_finished"), {"flow_slug": flow}
        ).fetchone()
        if failed:
            raise SystemExit(f"{failed} run(s) of {flow} failed")
        if done >= runs:
            break
        if any(p.poll() is not None for p in workers.procs):
            raise SystemExit("a worker exited: see /tmp/scale-out-logs/")
        waiters = max(waiters, conn.execute(test_query("scale_lock_waiters")).fetchone()[0])
        time.sleep(0.1)
    db1, work1, (busy1, all1) = database_cpu(server.postmaster_pid()), workers.cpu(), machine_busy()
    window = time.monotonic() - began
    time.sleep(STATS_SETTLE)
    wal1 = conn.execute(test_query("scale_wal")).fetchone()
    exec_ms = conn.execute(test_query("scale_statements")).fetchone()[0]
    seconds = (last - committed).total_seconds()
    return Phase(
        route="direct" if workers.bouncer is None else "pgbouncer",
        workload="jobs" if flow == JOB else "4-step dag",
        workers=len(workers.procs),
        runs=runs,
        tasks=runs * tasks,
        seconds=seconds,
        window=window,
        enqueue_db_cpu=db0 - before_enqueue,
        db_cpu=db1 - db0,
        workers_cpu=work1 - work0,
        machine_busy=(busy1 - busy0) / (all1 - all0),
        lock_waiters=waiters,
        exec_ms=exec_ms,
        wal_bytes=int(wal1[0] - wal0[0]),
        wal_records=int(wal1[1] - wal0[1]),
        wal_fpi=int(wal1[2] - wal0[2]),
    )


def census(conn: Any, db: str) -> dict[str, dict[str, int]]:
    """Server connections of ``db`` per client address, by part of the worker."""
    found: dict[str, dict[str, int]] = {}
    for addr, app_name, last in conn.execute(test_query("scale_connections"), {"dbname": db}):
        if app_name == BENCH_APP:
            continue
        role = ROLES.get(app_name)
        if role is None and app_name == "pgflow-kombu-worker":  # the transport's connections
            role = "listener" if last.upper().startswith("LISTEN") else "transport reads/acks"
        role = role or f"other ({app_name or '-'})"
        by_role = found.setdefault(addr, {})
        by_role[role] = by_role.get(role, 0) + 1
    return found


# -- main ----------------------------------------------------------------------------------------


def make_hosts(count: int, plain: bool) -> list[Host]:
    if plain:
        return [Host() for _ in range(count)]
    hosts: list[Host] = []
    try:
        for _ in range(count):
            ns = NetNamespace(prefix="pks-")
            ns.create()
            hosts.append(Host(ns))
    except RuntimeError:
        for host in hosts:
            host.close()
        raise
    return hosts


@contextlib.contextmanager
def phase_database(server: Server, name: str) -> Iterator[str]:
    with connect(server.admin_url) as admin:
        if database_exists(admin, name):
            drop_database(admin, name)
        create_database(admin, name, template=TEMPLATE)
    try:
        yield name
    finally:
        with connect(server.admin_url) as admin:
            drop_database(admin, name)


def prepare_template(server: Server) -> None:
    with connect(server.admin_url) as admin:
        if database_exists(admin, TEMPLATE):
            drop_database(admin, TEMPLATE)
        create_database(admin, TEMPLATE)
    url = server.url(TEMPLATE)
    migrations.upgrade(url)
    app = build_app(url)
    for flow in app.flows.values():
        app.ensure_flow(flow)
    app.close()
    with connect(url) as conn:
        conn.execute(test_query("scale_create_statements_extension"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--jobs", type=int, default=6000, help="one-step runs per phase")
    parser.add_argument("--dags", type=int, default=1500, help="4-step runs per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument("--plain", action="store_true", help="local processes, no namespaces")
    parser.add_argument("--port", type=int, default=5446)
    parser.add_argument("--data", default="/tmp/pg-scale-out")
    parser.add_argument("--keep-server", action="store_true", help="leave the server running")
    parser.add_argument(
        "--routes",
        default="direct",
        help="direct and/or pgbouncer (transaction mode, PGFLOW_POLL_ONLY=1), comma-separated",
    )
    parser.add_argument("--pgbouncer-port", type=int, default=6446)
    parser.add_argument("--pgbouncer-pool-size", type=int, default=20)
    return parser.parse_args()


@dataclass
class Results:
    phases: list[Phase] = field(default_factory=list)
    connections: dict[tuple[str, int], dict[str, dict[str, int]]] = field(default_factory=dict)
    churn: list[Any] = field(default_factory=list)  # of the last worker count's database
    top: list[Any] = field(default_factory=list)  # statements of its last phase


def run_count(
    args: argparse.Namespace,
    count: int,
    hosts: list[Host],
    server: Server,
    bouncer: PgBouncer | None,
    results: Results,
) -> None:
    """Both phases with ``count`` workers, on a fresh database."""
    route = "direct" if bouncer is None else "pgbouncer"
    with (
        phase_database(server, f"scale_out_{route}_{count}") as db,
        connect(server.url(db)) as conn,
    ):
        app = build_app(server.url(db))
        workers = start_workers(hosts, server, db, args.concurrency, bouncer)
        try:
            wait_registered(conn, workers, 2 * count)  # a row per flow queue
            results.phases.append(measure(conn, app, server, workers, JOB, args.jobs, 1))
            # every part has connected by now, and keeps its connection when idle
            results.connections[route, count] = census(conn, db)
            results.phases.append(measure(conn, app, server, workers, DAG, args.dags, 4))
            results.top = conn.execute(test_query("scale_top_statements"), {"n": 6}).fetchall()
        finally:
            workers.stop()
            app.close()
        time.sleep(1.0)  # ended backends have flushed their table statistics
        results.churn = conn.execute(test_query("scale_table_churn"), {"n": 8}).fetchall()


def describe(args: argparse.Namespace, plain: bool, bouncer: PgBouncer | None) -> None:
    why = "--plain" if args.plain else netns_unavailable()
    with connect(f"postgresql://postgres@127.0.0.1:{args.port}/postgres") as admin:
        row = admin.execute(test_query("scale_server_version")).fetchone()
        version = row[0] if row else "?"
    where = f"plain local processes ({why})" if plain else "one network namespace each (pks-*)"
    print(
        f"server: PostgreSQL {version} on port {args.port}, default settings + "
        f"pg_stat_statements; machine: {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    if bouncer is not None:
        print(
            f"route pgbouncer: PgBouncer (transaction pooling, default_pool_size "
            f"{bouncer.pool_size}, port {bouncer.port}), workers with PGFLOW_POLL_ONLY=1"
        )
    print(
        f"workers: {where}, thread pool x {args.concurrency}, prefetch "
        f"{4 * args.concurrency}; jobs {args.jobs}, dags {args.dags} (x 4 tasks)\n"
    )


def main() -> None:
    args = parse_args()
    os.environ["PGAPPNAME"] = BENCH_APP  # this process's connections, left out of the census
    plain = args.plain or netns_unavailable() is not None
    server = Server(Path(args.data), args.port)
    server.start()
    results = Results()
    bouncer: PgBouncer | None = None
    try:
        routes = args.routes.split(",")
        if set(routes) - {"direct", "pgbouncer"}:
            raise SystemExit(f"--routes: direct and/or pgbouncer, not {args.routes!r}")
        if "pgbouncer" in routes:
            bouncer = PgBouncer(
                server.admin_url,
                port=args.pgbouncer_port,
                pool_size=args.pgbouncer_pool_size,
                listen_addr="127.0.0.1" if plain else "*",
            )
            bouncer.start()
        prepare_template(server)
        describe(args, plain, bouncer)
        for count in [int(n) for n in args.workers.split(",")]:
            hosts = make_hosts(count, plain)
            try:
                for route in routes:
                    run_count(
                        args,
                        count,
                        hosts,
                        server,
                        bouncer if route == "pgbouncer" else None,
                        results,
                    )
            finally:
                for host in hosts:
                    host.close()
        report(results)
    finally:
        if bouncer is not None:
            bouncer.stop()
        if server.started_here and not args.keep_server:
            server.stop()


def report(results: Results) -> None:
    phases, connections = results.phases, results.connections
    churn, top = results.churn, results.top
    cores = os.cpu_count() or 1
    head = (
        f"{'route':<10}{'workload':<11}{'wk':>3}{'runs':>6}{'tasks':>6}{'s':>6}{'runs/s':>8}"
        f"{'tasks/s':>8}{'x 1':>6}{'vs direct':>10}{'db cores':>9}{'enq ms':>7}{'db ms/run':>10}"
        f"{'runs/s/dbcore':>14}{'wk cores':>9}{'busy':>6}{'lockw':>6}{'exec ms/run':>12}"
        f"{'WAL B/run':>10}{'rec/run':>8}{'fpi/run':>8}"
    )
    print(head)
    print("-" * len(head))
    rates = {(p.route, p.workload, p.workers): p.tasks / p.seconds for p in phases}
    fewest = {(p.route, p.workload): min(q.workers for q in phases) for p in phases}
    ones = {key: rates[(key[0], key[1], n)] for key, n in fewest.items()}
    for p in sorted(phases, key=lambda p: (p.route, p.workload, p.workers)):
        rate = rates[p.route, p.workload, p.workers]
        direct = rates.get(("direct", p.workload, p.workers))
        versus = f"{rate / direct:>10.2f}" if direct and p.route != "direct" else f"{'':>10}"
        print(
            f"{p.route:<10}{p.workload:<11}{p.workers:>3}{p.runs:>6}{p.tasks:>6}{p.seconds:>6.1f}"
            f"{p.runs / p.seconds:>8.0f}{rate:>8.0f}{rate / ones[p.route, p.workload]:>6.2f}"
            f"{versus}{p.db_cpu / p.window:>9.2f}{1000 * p.enqueue_db_cpu / p.runs:>7.2f}"
            f"{1000 * (p.enqueue_db_cpu + p.db_cpu) / p.runs:>10.2f}"
            f"{p.runs / (p.enqueue_db_cpu + p.db_cpu):>14.0f}{p.workers_cpu / p.window:>9.2f}"
            f"{100 * p.machine_busy:>5.0f}%{p.lock_waiters:>6}{p.exec_ms / p.runs:>12.2f}"
            f"{p.wal_bytes / p.runs:>10.0f}{p.wal_records / p.runs:>8.1f}"
            f"{p.wal_fpi / p.runs:>8.2f}"
        )
    print(
        f"\n(s, runs/s, tasks/s: from the backlog's commit to its last completion; x 1: tasks/s "
        f"over the first worker count's, same route and workload; vs direct: tasks/s over the direct "
        f"route's, same workload and workers; db cores: database CPU while the workers drained the backlog / that time, "
        f"of {cores}; enq ms: database CPU of the enqueue per run (one transaction for all); db "
        "ms/run: database CPU per run, enqueue included; runs/s/dbcore: runs one database core "
        "could carry at that cost; wk cores: all workers' CPU while draining; busy: the whole "
        "machine while draining; lockw: most backends seen waiting on a lock; exec ms/run: "
        "pg_stat_statements top-level time per run (lock waits included); WAL B/run: from "
        "pg_current_wal_lsn (exact, whole cluster); rec, fpi: WAL records and full-page images "
        "from pg_stat_wal (approximate: backends report them about once a second))"
    )
    print(
        "\nserver connections of the workers (pg_stat_activity, after the jobs phase), per "
        "address (through pgbouncer: the pooler's, named after the client that used them last):"
    )
    for (route, count), by_addr in connections.items():
        for addr, roles in sorted(by_addr.items()):
            parts = ", ".join(f"{role} {n}" for role, n in sorted(roles.items()))
            total = sum(roles.values())
            print(f"  {route}, {count} worker(s), from {addr}: {total} = {parts}")
    print(
        "\ntables with the most churn in the last database, both phases (ins/upd/del/dead/autovac):"
    )
    for name, ins, upd, dele, dead, vacuums in churn:
        print(f"  {name:<28}{ins:>8}{upd:>8}{dele:>8}{dead:>8}{vacuums:>4}")
    print("\ntop statements of the last phase (calls, total ms):")
    for calls, total, text in top:
        print(f"  {calls:>7}{total:>10.0f}  {text}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
