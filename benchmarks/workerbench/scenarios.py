"""The scenarios, run on one system in an order that restarts its worker least often."""

from __future__ import annotations

import concurrent.futures
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.workerbench.dbcpu import DbCpu, per_job_us
from benchmarks.workerbench.system import Counter, System

SCENARIOS = ("enqueue", "batch", "drain", "e2e", "latency", "diamond")
BATCH = 500  # jobs per call of a batched enqueue

Result = dict[str, float]


@dataclass
class Options:
    jobs: int
    diamonds: int
    latency_runs: int
    scenarios: tuple[str, ...]
    producers: tuple[int, ...] = (1, 4)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def enqueue_all(enqueue: Callable[[int], None], n: int, producers: int) -> float:
    """Enqueue jobs 0..n-1 from ``producers`` threads, one share each, started together;
    returns seconds. The first error of a producer is raised."""
    if producers == 1:
        began = time.perf_counter()
        for i in range(n):
            enqueue(i)
        return time.perf_counter() - began
    start = threading.Barrier(producers + 1)
    errors: list[BaseException] = []

    def produce(share: range) -> None:
        start.wait()
        try:
            for i in share:
                enqueue(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=produce, args=(range(p, n, producers),)) for p in range(producers)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return seconds


def consume(system: System, counter: Counter, n: int) -> None:
    """Let a worker run a backlog of n away (untimed), and stop it."""
    system.start_worker(wait=False)
    counter.wait_for(n)
    system.stop_worker()


def timed_drain(system: System, counter: Counter, n: int) -> float:
    """Start the worker on a backlog of n; seconds from when it ran a probe job (on a queue of
    its own, so not behind the backlog) or from its first completion, whichever came first
    (procrastinate takes jobs in id order across queues), to the backlog's last completion."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        system.start_worker(wait=False)
        waiting = pool.submit(counter.wait_for, n)
        ready = system.stamp(-1, timeout=900)
        first, last = waiting.result()
    return last - min(ready, first)


def measure(system: System, options: Options, dbcpu: DbCpu | None) -> Result:
    result: Result = {}
    system.setup()
    try:
        run_scenarios(system, options, dbcpu, result)
    finally:
        system.teardown()
    return result


def run_scenarios(system: System, options: Options, dbcpu: DbCpu | None, result: Result) -> None:
    n, wanted = options.jobs, set(options.scenarios)
    counter = system.counter()
    if "enqueue" in wanted:
        for producers in options.producers:
            if producers == 1:
                continue  # measured below, on the drain's backlog
            system.reset()
            result[f"enqueue_{producers}"] = rate(n, enqueue_all(system.enqueue, n, producers))
            consume(system, counter, n)
    if "batch" in wanted and system.has_batch:
        system.reset()
        began = time.perf_counter()
        for start in range(0, n, BATCH):
            system.enqueue_batch(range(start, min(n, start + BATCH)))
        result["enqueue_batch"] = rate(n, time.perf_counter() - began)
        consume(system, counter, n)
    if wanted & {"enqueue", "drain"}:
        system.reset()
        result["enqueue_1"] = rate(n, enqueue_all(system.enqueue, n, 1))
        result["drain"] = rate(n, timed_drain(system, counter, n))
    else:
        system.start_worker()
    if "e2e" in wanted:
        for producers in options.producers:
            system.reset()
            # Database CPU on the one-producer run: enqueue, claim, run and completion of each job.
            watch = dbcpu is not None and system.database is not None and producers == 1
            before = dbcpu.read(system.database) if watch and dbcpu and system.database else None
            began = time.time()
            enqueue_all(system.enqueue, n, producers)
            _first, last = counter.wait_for(n)
            result[f"e2e_{producers}"] = rate(n, last - began)
            if before is not None and dbcpu is not None and system.database:
                result.update(per_job_us(before, dbcpu.read(system.database), n))
    if "latency" in wanted:
        latencies = []
        for i in range(options.latency_runs):
            time.sleep(0.02)
            began = time.time()
            latencies.append((system.stamp(i) - began) * 1000)
        result["p50"] = statistics.median(latencies)
        result["p99"] = percentile(latencies, 99)
    system.stop_worker()
    if "diamond" in wanted and system.has_diamond and options.diamonds:
        measure_diamonds(system, counter, options.diamonds, result)


def measure_diamonds(system: System, counter: Counter, diamonds: int, result: Result) -> None:
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
    system.stop_worker()
