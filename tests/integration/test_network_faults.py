"""Network faults: a worker, then a Celery worker, cut off from the database without a word.

The test builds the cut itself: a network namespace joined to the host by a veth pair, a throwaway
server listening on the host end, the worker in the namespace, and the namespace's end of the
link taken down (no reset, no close: packets are lost) and brought up again. Keepalives,
``tcp_user_timeout`` and stall settings are small so that the module runs in about a minute.
Skipped, saying why, where namespaces are unavailable (they need root and iproute2).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from pgflow_kombu.client import Client
from pgflow_kombu.db import migrations
from pgflow_kombu.db.admin import create_database
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.urls import with_database
from pgflow_kombu.transport import store
from tests.celery_app.servers import ThrowawayServer
from tests.celery_app.urls import broker_url
from tests.celery_app.worker import ROOT, Worker
from tests.e2e_apps.harness import WorkerProcess
from tests.support.netns import NetNamespace, unavailable_reason

pytestmark = pytest.mark.slow  # each cuts a link for CUT_FOR seconds

APP = "tests.e2e_apps.netfaults:app"

# Dead peers are noticed after 1 + 1 * 2 s idle, or 3 s of unacknowledged data.
LIVENESS = {
    "PGFLOW_KEEPALIVES_IDLE": "1",
    "PGFLOW_KEEPALIVES_INTERVAL": "1",
    "PGFLOW_KEEPALIVES_COUNT": "2",
    "PGFLOW_TCP_USER_TIMEOUT": "3",
    "PGFLOW_CLIENT_CONNECTION_CHECK_INTERVAL": "1",
}
KEEPALIVE_BOUND = 3.0
HEARTBEAT, STALLED_AFTER = 1.0, 6.0
# What "within the keepalive bound" may take on a loaded 2-core machine: the bound, a heartbeat
# interval, and slack for scheduling.
DETECTION_LIMIT = KEEPALIVE_BOUND + HEARTBEAT + 6.0
CUT_FOR = 15.0
LOST_BROKER = "Connection to broker lost"
ADD = "tests.celery_app.app.add"

MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def netns() -> Iterator[NetNamespace]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network faults need a network namespace: {reason}")
    namespace = NetNamespace()
    try:
        namespace.create()
    except RuntimeError as exc:
        pytest.skip(f"network faults need a network namespace: {exc}")
    yield namespace
    namespace.delete()


@pytest.fixture(scope="module")
def server(
    netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThrowawayServer]:
    throwaway = ThrowawayServer(tmp_path_factory.mktemp("netfaults") / "pgdata")
    try:
        throwaway.listen_on(netns.host_ip, netns.network)
        yield throwaway
    finally:
        throwaway.close()


@pytest.fixture
def urls(
    server: ThrowawayServer, netns: NetNamespace, request: pytest.FixtureRequest
) -> tuple[str, str]:
    """(the URL over the Unix socket, the URL over the veth link) of a fresh database."""
    name = f"n_{request.node.name[-40:].lower()}"
    with connect(server.url()) as conn:
        create_database(conn, name)
    local = with_database(server.url(), name)
    migrations.upgrade(local)
    return local, f"postgresql://postgres@{netns.host_ip}:{server.port}/{name}"


@pytest.fixture(scope="module", autouse=True)
def report_measurements() -> Iterator[None]:
    yield
    if MEASURED:
        print("\nnetwork-fault timings (s):", json.dumps(MEASURED, sort_keys=True))


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def events(worker: WorkerProcess, name: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.log.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


def at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["ts"]).timestamp()


def starts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_cut_off_worker_notices_starts_nothing_superseded_and_resumes(
    netns: NetNamespace, urls: tuple[str, str], tmp_path: Path
) -> None:
    local_url, link_url = urls
    log = tmp_path / "starts.jsonl"
    settings = ["--heartbeat-interval", str(HEARTBEAT), "--stalled-after", str(STALLED_AFTER)]
    settings += ["--log-format", "json"]
    env = {**LIVENESS, "NETFAULTS_LOG": str(log)}
    client = Client(local_url)
    cut_off = WorkerProcess(
        link_url,
        *settings,
        "-c",
        "1",
        "--prefetch",
        "3",
        app=APP,
        env={**env, "NETFAULTS_NAME": "cut"},
        prefix=netns.exec_prefix,
    )
    peer: WorkerProcess | None = None
    try:
        cut_off.wait_ready()
        # Handlers outlast --stalled-after: whatever the cut-off worker holds when the link goes
        # down, one of its claimed tasks reaches a free slot only after its heartbeat is too old.
        runs = [client.start_flow("netcut", {"sleep": 7.0, "n": n}) for n in range(6)]
        wait_until(lambda: starts(log), 30, "the worker started a handler")
        time.sleep(0.5)  # its prefetch fills up

        cut_at = time.time()
        netns.cut()
        peer = WorkerProcess(
            local_url, *settings, "-c", "6", app=APP, env={**env, "NETFAULTS_NAME": "peer"}
        ).wait_ready()

        lost = wait_until(
            lambda: events(cut_off, "db_unreachable"), CUT_FOR, "the cut-off worker logged it"
        )
        detected = at(lost[0]) - cut_at
        MEASURED["worker_detection"] = round(detected, 2)
        assert detected <= DETECTION_LIMIT, cut_off.log

        # The peer recovers the cut-off worker's tasks and finishes every run meanwhile.
        for run_id in runs:
            assert client.wait(run_id, timeout=60).status == "completed"
        recovered_at = time.time()
        MEASURED["runs_completed_after_cut"] = round(recovered_at - cut_at, 2)
        assert peer.stop() == 0
        peer = None

        time.sleep(max(0.0, cut_at + CUT_FOR - time.time()))
        restored_at = time.time()
        netns.restore()
        back = wait_until(
            lambda: events(cut_off, "db_reconnected"), 30, "the worker saw the database again"
        )
        MEASURED["worker_reconnection"] = round(at(back[0]) - restored_at, 2)

        # It serves again: new runs are handled by it (the peer is gone).
        more = [client.start_flow("netcut", {"sleep": 0.1, "n": n}) for n in range(3)]
        for run_id in more:
            assert client.wait(run_id, timeout=30).status == "completed"
        MEASURED["worker_serving_again"] = round(time.time() - restored_at, 2)
        ours = [s for s in starts(log) if s["run_id"] in {str(r) for r in more}]
        assert ours and {s["worker"] for s in ours} == {"cut"}
    finally:
        if peer is not None:
            peer.stop()
        cut_off.stop()
        client.close()

    # The loss was logged once, and the return once.
    assert len(events(cut_off, "db_unreachable")) == 1, cut_off.log
    assert len(events(cut_off, "db_reconnected")) == 1, cut_off.log
    # It held claimed tasks it could not start in time: it never started them.
    assert events(cut_off, "task_not_started"), cut_off.log
    # No superseded start: none of its starts came after a later attempt of the same task began.
    recorded = starts(log)
    for mine in (s for s in recorded if s["worker"] == "cut"):
        later = [
            s
            for s in recorded
            if (s["run_id"], s["step"]) == (mine["run_id"], mine["step"])
            and s["attempt"] > mine["attempt"]
        ]
        assert all(s["at"] > mine["at"] for s in later), (mine, later)


def consumer_pids(local_url: str, queue: str) -> set[int]:
    with connect(local_url) as conn:
        rows = conn.execute(
            "SELECT backend_pid FROM pgflow_kombu.consumers WHERE queue = %s", (queue,)
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def backends_alive(local_url: str, pids: set[int]) -> bool:
    with connect(local_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
        ).fetchone()
    return bool(row and row[0])


def forgotten(local_url: str, queue: str, pids: set[int]) -> bool:
    """Whether a sweep (as any transport runs them) no longer counts those consumers."""
    with connect(local_url) as conn:
        store.sweep(conn)
    return not consumer_pids(local_url, queue) & pids


def added(path: Path, x: int) -> bool:
    lines = path.read_text().splitlines() if path.exists() else []
    return any(e["event"] == "add" and e["x"] == x for e in map(json.loads, lines))


@pytest.fixture
def control(urls: tuple[str, str]) -> Iterator[Celery]:
    """A Celery app of this test's own (the shared one keeps its producer pools across close()),
    reaching the database over the Unix socket: readiness pings and publishing."""
    with Celery("netfaults", broker=broker_url(urls[0]), set_as_current=False) as celery:
        celery.conf.broker_transport_options = CELERY_OPTIONS
        yield celery


CELERY_OPTIONS = {"polling_interval": 0.5, "sweep_interval": 1.0, "visibility_timeout": 30}


def test_cut_off_celery_worker_reconnects_and_its_consumers_are_forgotten(
    netns: NetNamespace, urls: tuple[str, str], control: Celery, tmp_path: Path
) -> None:
    local_url, link_url = urls
    events_log = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        **LIVENESS,
        "CELERY_TEST_BROKER": broker_url(link_url),
        "CELERY_TEST_LOG": str(events_log),
        "CELERY_TEST_TRANSPORT_OPTIONS": json.dumps(CELERY_OPTIONS),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CELERY_TEST_BACKEND", None)
    queue = "netcut"
    worker = Worker(
        "netcut",
        env,
        tmp_path,
        queues=queue,
        concurrency=1,
        control=control,
        prefix=netns.exec_prefix,
    )
    with worker.start(timeout=60):
        control.send_task(ADD, (1, 1), queue=queue)
        wait_until(lambda: added(events_log, 1), 30, "the worker ran a task")
        before = consumer_pids(local_url, queue)
        assert before

        cut_at = time.time()
        netns.cut()
        wait_until(lambda: LOST_BROKER in worker.log(), CUT_FOR, "the Celery worker noticed")
        MEASURED["celery_detection"] = round(time.time() - cut_at, 2)
        # The server ends the cut-off listener's backend; its consumers are then forgotten.
        wait_until(lambda: not backends_alive(local_url, before), CUT_FOR, "backend ended")
        MEASURED["celery_backend_ended"] = round(time.time() - cut_at, 2)
        wait_until(lambda: forgotten(local_url, queue, before), 10, "consumer forgotten")
        MEASURED["celery_consumer_forgotten"] = round(time.time() - cut_at, 2)
        assert MEASURED["celery_detection"] <= DETECTION_LIMIT, worker.log()

        time.sleep(max(0.0, cut_at + CUT_FOR - time.time()))
        restored_at = time.time()
        netns.restore()
        control.send_task(ADD, (2, 2), queue=queue)
        wait_until(lambda: added(events_log, 2), 60, "the worker ran a task after the cut")
        MEASURED["celery_serving_again"] = round(time.time() - restored_at, 2)
        assert consumer_pids(local_url, queue) - before  # it consumes on a new connection

        # Killed while cut off (no FIN reaches the server): its consumers are forgotten too.
        live = consumer_pids(local_url, queue)
        netns.cut()
        killed_at = time.time()
        worker.stop(sig=signal.SIGKILL)
        try:
            wait_until(lambda: forgotten(local_url, queue, live), 30, "killed consumer forgotten")
            MEASURED["killed_consumer_forgotten"] = round(time.time() - killed_at, 2)
        finally:
            netns.restore()
