"""End to end through the real ``pgflow-kombu worker`` command, in subprocesses."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from pgflow_kombu.client import Client
from tests.e2e_apps.harness import WorkerProcess

FAST = ["--heartbeat-interval", "0.5", "--stalled-after", "3"]


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    c = Client(db_url, poll_interval=0.5)
    yield c
    c.close()


@pytest.mark.parametrize("pool", ["threads", "processes", "asyncio"])
def test_linear_diamond_map_and_chained_flows_complete(
    db_url: str, client: Client, pool: str
) -> None:
    with WorkerProcess(db_url, "--pool", pool, "-c", "3", *FAST) as worker:
        worker.wait_ready()
        linear = [client.start_flow("linear", {"n": n}) for n in range(5)]
        diamond = [client.start_flow("diamond", n) for n in range(5)]
        mapped = client.start_flow("mapped", [1, 2, 3])
        empty = client.start_flow("mapped", [])
        chained = client.start_flow("chained", {"source": "1,2,3"})
        for n, run_id in enumerate(linear):
            assert client.wait(run_id, timeout=60).output == {"third": {"result": 11 * n + 10}}
        for n, run_id in enumerate(diamond):
            assert client.wait(run_id, timeout=60).output == {"bottom": [n + 1, n * 2]}
        assert client.wait(mapped, timeout=60).output == {"shout": ["X2", "X4", "X6"]}
        assert client.wait(empty, timeout=60).output == {"shout": []}
        assert client.wait(chained, timeout=60).output == {"total": 14}
        assert worker.stop() == 0
    assert "pgflow-kombu worker" in worker.log and f"{pool} x 3" in worker.log


def test_retries_and_final_failures_are_recorded_as_pgflow_does(
    db_url: str, client: Client
) -> None:
    with WorkerProcess(db_url, *FAST) as worker:
        worker.wait_ready()
        recovers = client.start_flow("flaky", {"failures": 2})
        gives_up = client.start_flow("flaky", {"failures": 9})
        bad_type = client.start_flow("wrong_output", {"kind": "type"})
        not_json = client.start_flow("not_json", {"kind": "json"})

        run = client.wait(recovers, timeout=60)
        assert run.output == {"flaky": "succeeded on attempt 3"}
        assert run.step_states[0].tasks[0].attempts_count == 3

        run = client.wait(gives_up, timeout=60, raise_on_failure=False)
        task = run.step_states[0].tasks[0]
        assert (run.status, task.status, task.attempts_count) == ("failed", "failed", 3)
        assert task.error_message == "RuntimeError: attempt 3 failed"
        assert run.step_states[0].error_message == "RuntimeError: attempt 3 failed"

        for run_id, expected in ((bad_type, "return type"), (not_json, "not JSON")):
            run = client.wait(run_id, timeout=60, raise_on_failure=False)
            task = run.step_states[0].tasks[0]
            assert (run.status, task.attempts_count) == ("failed", 2)
            assert task.error_message is not None
            assert task.error_message.startswith("StepOutputError:")
            assert expected in task.error_message
        worker.stop()
    # The traceback of a handler error is in the worker's log.
    assert 'raise RuntimeError(f"attempt {ctx.attempt} failed")' in worker.log


def test_sigterm_lets_a_long_task_finish_and_fails_nothing(db_url: str, client: Client) -> None:
    with WorkerProcess(db_url, "--shutdown-timeout", "30", *FAST) as worker:
        worker.wait_ready()
        run_id = client.start_flow("sleeper", {"seconds": 2.0})
        _wait_until_started(client, run_id)
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        run = client.get_run_with_states(run_id)
        task = run.step_states[0].tasks[0]
        assert (run.status, task.status, task.attempts_count) == ("completed", "completed", 1)
    assert "SIGTERM received" in worker.log


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_a_second_interrupt_exits_at_once(db_url: str, client: Client, pool: str) -> None:
    with WorkerProcess(db_url, "--pool", pool, "--shutdown-timeout", "60", *FAST) as worker:
        worker.wait_ready()
        run_id = client.start_flow("sleeper", {"seconds": 30.0})
        _wait_until_started(client, run_id)
        worker.signal(signal.SIGINT)
        worker.wait_for("SIGINT received")
        worker.signal(signal.SIGINT)
        assert worker.wait(10) == 130
        # No handler process is left finishing the task unseen.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(worker.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("processes of the worker outlived it")
    # Not failed: the task is left started for stalled-task recovery.
    assert client.get_run_with_states(run_id).step_states[0].tasks[0].status == "started"


def test_startup_errors_exit_with_a_message(db_url: str) -> None:
    with WorkerProcess(db_url, app="tests.e2e_apps.no_such_module:app") as worker:
        assert worker.wait(60) == 1
    assert "cannot import 'tests.e2e_apps.no_such_module'" in worker.log
    with WorkerProcess(db_url, "--flows", "linear,nope") as worker:
        assert worker.wait(60) == 1
    assert "no code for flow(s) nope" in worker.log


def _wait_until_started(client: Client, run_id: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get_run_with_states(str(run_id))
        tasks = [t for s in run.step_states for t in s.tasks]
        if tasks and tasks[0].status == "started":
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} was not started within {timeout} s")


def test_sigterm_to_the_whole_group_spares_process_pool_handlers(
    db_url: str, client: Client
) -> None:
    # Service managers signal every process of the worker; the children must keep running.
    with WorkerProcess(db_url, "--pool", "processes", "-c", "2", *FAST) as worker:
        worker.wait_ready()
        run_id = client.start_flow("sleeper", {"seconds": 2.0})
        _wait_until_started(client, run_id)
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(60) == 0
        task = client.get_run_with_states(run_id).step_states[0].tasks[0]
        assert (task.status, task.attempts_count) == ("completed", 1)
