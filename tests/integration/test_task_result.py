"""``task.delay(...).get()`` returns the function's value through a real worker, as Celery's
``AsyncResult.get()``; the run output keeps pgflow's ``{step: value}`` shape."""

from __future__ import annotations

import pytest

from pgflow_kombu import PgFlow, RunFailed


def test_get_returns_the_tasks_value(db_url: str) -> None:
    app = PgFlow(db_url)

    @app.task
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @app.task(max_attempts=1)
    def fails(n: int) -> int:
        raise ValueError(f"bad {n}")

    try:
        app.start_worker(heartbeat_interval=0.2, concurrency=1)
        handle = add.delay(2, 3)
        assert handle.get(timeout=60) == {"sum": 5}
        assert handle.output == {"add": {"sum": 5}}
        assert handle.wait(timeout=5).output == {"add": {"sum": 5}}
        assert add.apply_async((1, 1)).get(timeout=60) == {"sum": 2}
        assert app.enqueue("add", {"a": 1, "b": 2}).get(timeout=60) == {"add": {"sum": 3}}
        batch = app.start_many(add, [{"a": 1, "b": 3}, {"a": 2, "b": 4}])
        assert [h.get(timeout=60) for h in batch] == [{"sum": 4}, {"sum": 6}]
        assert batch[0].output == {"add": {"sum": 4}}
        by_slug = app.start_many("add", [{"a": 0, "b": 1}])  # the app's task, named
        assert [h.get(timeout=60) for h in by_slug] == [{"sum": 1}]
        with pytest.raises(RunFailed, match="ValueError: bad 1"):
            fails.delay(1).get(timeout=60)
    finally:
        app.close()
