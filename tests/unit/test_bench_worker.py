"""The job benchmark's arithmetic and report (benchmarks/workerbench): no timings asserted."""

from __future__ import annotations

import threading

import pytest

from benchmarks.worker import median_result, parse_list
from benchmarks.workerbench import report
from benchmarks.workerbench.dbcpu import Reading, per_job_us
from benchmarks.workerbench.scenarios import enqueue_all


def test_database_cpu_per_job_counts_each_backend_once() -> None:
    before = Reading(server=10.0, backends={1: 2.0, 2: 5.0}, statements_ms=100.0)
    # backend 1 ran on, backend 2 exited (its time is lost to this measure), backend 3 is new
    after = Reading(server=10.5, backends={1: 2.2, 3: 0.1}, statements_ms=300.0)
    found = per_job_us(before, after, 1000)
    assert found["cpu_server"] == pytest.approx(500.0)
    assert found["cpu_backends"] == pytest.approx(300.0)
    assert found["statements"] == pytest.approx(200.0)


def test_database_cpu_is_left_out_where_it_cannot_be_read() -> None:
    remote = Reading(server=None, backends={}, statements_ms=None)
    assert per_job_us(remote, remote, 10) == {}


def test_producers_enqueue_every_job_exactly_once_from_their_threads() -> None:
    seen: list[int] = []
    threads: set[int] = set()
    lock = threading.Lock()

    def enqueue(i: int) -> None:
        with lock:
            seen.append(i)
            threads.add(threading.get_ident())

    enqueue_all(enqueue, 1001, 4)
    assert sorted(seen) == list(range(1001))
    assert len(threads) == 4


def test_medians_are_taken_per_figure_over_the_rounds_that_have_it() -> None:
    merged = median_result([{"drain": 1.0, "p50": 3.0}, {"drain": 3.0}, {"drain": 2.0}])
    assert merged == {"drain": 2.0, "p50": 3.0}


def test_unknown_systems_are_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="unknown system: celery-kafka"):
        parse_list("ours,celery-kafka", ("ours", "pgqueuer"), "system")


def test_targets_compare_like_with_like() -> None:
    results = {
        "ours": {"e2e_1": 900.0, "cpu_server": 300.0, "cpu_backends": 200.0, "p50": 4.0},
        "celery-redis": {"e2e_1": 1000.0, "p50": 2.0},
        "procrastinate": {"e2e_1": 450.0},
        "reference": {"e2e_1": 100.0, "cpu_server": 600.0, "cpu_backends": 250.0},
    }
    names = {
        "ours": "pgflow-kombu",
        "celery-redis": "Celery+Redis",
        "procrastinate": "procrastinate",
        "reference": "pgflow 0.8.1 SQL",
    }
    durable = {"ours": True, "celery-redis": False, "procrastinate": True, "reference": True}
    text = report.targets(results, names, durable)
    assert "| end to end, 1 producer | Celery+Redis | 0.90x (higher is better) |" in text
    assert "| equal durability: end to end, 1 producer | procrastinate | 2.00x" in text
    assert "equal durability: end to end, 1 producer | Celery+Redis" not in text
    assert "equal durability: end to end, 1 producer | pgflow 0.8.1 SQL" not in text
    assert "| DB per job (cpu_server) <= 250 us | - | 300 us (misses) |" in text
    assert (
        "| DB per job (cpu_server) <= 0.6x reference | pgflow 0.8.1 SQL | 0.50x (meets) |" in text
    )
    assert "(cpu_backends) <= 0.6x reference | pgflow 0.8.1 SQL | 0.80x (misses) |" in text
    assert "| idle p50 | Celery+Redis | 2.00x (lower is better) |" in text
    table = report.table(results, names, durable)
    assert table.splitlines()[2].startswith("| pgflow-kombu | yes | 900 |")
