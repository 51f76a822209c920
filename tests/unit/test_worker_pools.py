"""The execution pools without a database: outcomes, errors, timeouts, stuck slots, shutdown."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pgflow_kombu.flows import Flow
from pgflow_kombu.worker.pools import Pool, make_pool
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome

RELEASE = threading.Event()

flow = Flow("pooltest")


@flow.step
def double(run: int) -> int:
    return run * 2


@flow.step
async def adouble(run: int) -> int:
    await asyncio.sleep(0)
    return run * 2


@flow.step
def boom(run: int) -> int:
    raise ValueError(f"bad value {run}")


@flow.step
def wrong_type(run: int) -> int:
    return "not an int"  # type: ignore[return-value]


@flow.step
def not_json(run: int):  # type: ignore[no-untyped-def]
    return object()


@flow.step
def sleepy(run: float) -> str:
    time.sleep(run)
    return "woke"


@flow.step
async def asleepy(run: float) -> str:
    await asyncio.sleep(run)
    return "woke"


@flow.step
def hang(run: int) -> str:
    RELEASE.wait(30)
    return "late"


@flow.step
def die(run: int) -> int:
    os._exit(3)


FLOWS = {flow.slug: flow}
KINDS = ["threads", "processes", "asyncio"]


def make_task(step: str, value: Any, *, timeout: float = 10.0, index: int = 0) -> ClaimedTask:
    return ClaimedTask(
        flow_slug=flow.slug,
        run_id="00000000-0000-0000-0000-000000000001",
        step_slug=step,
        task_index=index,
        msg_id=index + 1,
        input={"run": value},
        attempt=1,
        timeout=timeout,
        worker_id="00000000-0000-0000-0000-0000000000aa",
    )


class Collector:
    def __init__(self) -> None:
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()

    def __call__(self, outcome: Outcome) -> None:
        self.outcomes.put(outcome)

    def get(self, timeout: float = 20.0) -> Outcome:
        return self.outcomes.get(timeout=timeout)

    def take(self, n: int, timeout: float = 20.0) -> list[Outcome]:
        return [self.get(timeout) for _ in range(n)]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def pool(kind: str, collector: Collector) -> Iterator[Pool]:
    RELEASE.clear()
    made = make_pool(kind, FLOWS, 2, collector)
    made.start()
    yield made
    RELEASE.set()
    made.terminate()


def test_outputs_are_validated_json(pool: Pool, collector: Collector) -> None:
    pool.submit(make_task("double", 21))
    outcome = collector.get()
    assert outcome.output == 42 and outcome.error is None


def test_async_handlers_run_in_every_pool(pool: Pool, collector: Collector) -> None:
    pool.submit(make_task("adouble", 5))
    assert collector.get().output == 10


def test_handler_errors_carry_type_and_message(pool: Pool, collector: Collector) -> None:
    pool.submit(make_task("boom", 7))
    outcome = collector.get()
    assert outcome.error == "ValueError: bad value 7"
    assert outcome.traceback and "raise ValueError" in outcome.traceback


def test_bad_input_output_and_non_json_are_task_failures(pool: Pool, collector: Collector) -> None:
    pool.submit(make_task("double", "abc"))
    pool.submit(make_task("wrong_type", 1, index=1))
    pool.submit(make_task("not_json", 1, index=2))
    by_step = {o.task.step_slug: o for o in collector.take(3)}
    assert by_step["double"].error and by_step["double"].error.startswith("StepInputError:")
    assert by_step["wrong_type"].error and "StepOutputError" in by_step["wrong_type"].error
    assert by_step["not_json"].error and "not JSON" in by_step["not_json"].error


def test_timeout_fails_on_time_and_frees_the_slot(
    kind: str, pool: Pool, collector: Collector
) -> None:
    # Both slots hang; their timeouts must free them for the next task.
    pool.submit(make_task("hang", 0, timeout=0.3))
    pool.submit(make_task("hang", 0, timeout=0.3, index=1))
    pool.submit(make_task("double", 4, index=2))
    outcomes = collector.take(3)
    timeouts = [o for o in outcomes if o.timed_out]
    assert len(timeouts) == 2
    assert all(o.error and o.error.startswith("TimeoutError:") for o in timeouts)
    assert [o.output for o in outcomes if not o.failed] == [8]
    assert pool.stats.timed_out == 2
    if kind == "processes":
        assert pool.stats.replaced == 2 and pool.stats.stuck == 0
    else:
        assert pool.stats.stuck >= 1 or pool.stats.late_discarded >= 1
    # The late results are discarded, never reported.
    RELEASE.set()
    with pytest.raises(queue.Empty):
        collector.get(timeout=0.5)


def test_async_timeout_cancels_the_coroutine(collector: Collector) -> None:
    pool = make_pool("asyncio", FLOWS, 1, collector)
    pool.start()
    try:
        pool.submit(make_task("asleepy", 30, timeout=0.2))
        assert collector.get().timed_out
        deadline = time.monotonic() + 5
        while pool.stats.stuck and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.stats.stuck == 0  # cancelled, not left running
    finally:
        pool.terminate()


def test_a_dying_process_fails_its_attempt_and_is_replaced(collector: Collector) -> None:
    pool = make_pool("processes", FLOWS, 1, collector)
    pool.start()
    try:
        pool.submit(make_task("die", 1))
        pool.submit(make_task("double", 2, index=1))
        lost, ok = collector.take(2)
        assert lost.error and lost.error.startswith("WorkerLostError:")
        assert ok.output == 4
        assert pool.stats.replaced == 1
    finally:
        pool.terminate()


def test_close_returns_unstarted_tasks_and_join_waits_for_running(
    pool: Pool, collector: Collector
) -> None:
    for i in range(2):
        pool.submit(make_task("sleepy", 0.3, index=i))
    for i in range(2, 5):
        pool.submit(make_task("double", i, index=i))
    deadline = time.monotonic() + 5
    while pool.running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    left = pool.close()
    assert sorted(t.task_index for t in left) == [2, 3, 4]
    assert pool.join(10)
    assert [o.output for o in collector.take(2)] == ["woke", "woke"]


def test_each_attempt_ends_exactly_once_under_load(pool: Pool, collector: Collector) -> None:
    n = 200
    for i in range(n):
        pool.submit(make_task("double", i, index=i))
    outcomes = collector.take(n)
    assert sorted(o.output for o in outcomes) == [2 * i for i in range(n)]  # type: ignore[type-var]
    with pytest.raises(queue.Empty):
        collector.get(timeout=0.2)


def test_join_returns_only_once_every_outcome_was_handed_over(
    pool: Pool, collector: Collector
) -> None:
    # A stop reports what is queued after join(): an outcome handed over later would be lost.
    for i in range(2):
        pool.submit(make_task("sleepy", 0.2, index=i))
    deadline = time.monotonic() + 5
    while pool.running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.close()
    assert pool.join(10)
    assert [collector.outcomes.get_nowait().output for _ in range(2)] == ["woke", "woke"]


def test_the_gate_decides_which_claimed_tasks_start(pool: Pool, collector: Collector) -> None:
    refused: list[int] = []

    def gate(task: ClaimedTask) -> bool:
        if task.task_index % 2:
            refused.append(task.task_index)
            return False
        return True

    pool.gate = gate
    for index in range(6):
        pool.submit(make_task("double", index, index=index))
    outcomes = collector.take(3)
    assert sorted(o.task.task_index for o in outcomes) == [0, 2, 4]
    assert sorted(refused) == [1, 3, 5]
    assert pool.join(5)
    assert pool.stats.started == 3
    assert collector.outcomes.empty()
