"""Chaining existing tasks into a flow, Celery style: ``a >> [b, c] >> d`` and ``each(...)``.

Run: ``python -m examples.pipeline``
"""

from __future__ import annotations

from examples.common import running_worker, show
from pgflow_kombu import PgFlow
from pgflow_kombu.flows import each

app = PgFlow()


@app.task
def extract(source: str) -> list[int]:
    return [int(part) for part in source.split(",")]


@app.task
def square(value: int) -> int:
    return value * value


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task
def largest(values: list[int]) -> int:
    return max(values)


@app.task
def report(results: list[int]) -> str:
    return f"sum of squares {results[0]}, largest square {results[1]}"


# extract, then one `square` per element, then two branches side by side, then a join.
etl = app.register(
    (extract >> each(square) >> [total, largest] >> report).to_flow("squares_report")
)
simple = app.chain("sum_pipeline", extract, total)


def main() -> None:
    with running_worker(app):
        show("squares_report", etl.delay(source="1,2,3,4").wait(timeout=30).output)
        show("sum_pipeline", simple.delay(source="5,6,7").wait(timeout=30).output)


if __name__ == "__main__":
    main()
