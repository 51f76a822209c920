"""The end-to-end test app: one flow of each shape, plus flows that fail, retry and sleep."""

from __future__ import annotations

import time
from typing import Any

from pgflow_kombu import PgFlow
from pgflow_kombu.flows import StepContext, each

app = PgFlow()

# -- shapes ------------------------------------------------------------------------------------

linear = app.flow("linear")


@linear.step
def first(run: dict[str, int]) -> int:
    return run["n"] + 1


@linear.step
def second(first: int) -> int:
    return first * 10


@linear.step
def third(second: int, run: dict[str, int]) -> dict[str, int]:
    return {"result": second + run["n"]}


diamond = app.flow("diamond")


@diamond.step
def top(run: int) -> int:
    return run


@diamond.step
def left(top: int) -> int:
    return top + 1


@diamond.step
def right(top: int) -> int:
    return top * 2


@diamond.step
def bottom(left: int, right: int) -> list[int]:
    return [left, right]


mapped = app.flow("mapped")


@mapped.map
def double(item: int) -> int:
    return item * 2


@mapped.step
def spread(double: list[int]) -> list[str]:
    return [f"x{value}" for value in double]


@mapped.map(over="spread")
def shout(item: str) -> str:
    return item.upper()


@app.task
def extract(source: str) -> list[int]:
    return [int(part) for part in source.split(",")]


@app.task
def square(value: int) -> int:
    return value * value


@app.task
def total(values: list[int]) -> int:
    return sum(values)


chained = app.register((extract >> each(square) >> total).to_flow("chained"))

# -- failures ------------------------------------------------------------------------------------


@app.task(max_attempts=3, base_delay=0)
def flaky(failures: int, ctx: StepContext) -> str:
    """Fails its first ``failures`` attempts (attempt numbers come from pgflow)."""
    if ctx.attempt <= failures:
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return f"succeeded on attempt {ctx.attempt}"


@app.task(max_attempts=2, base_delay=0)
def wrong_output(kind: str) -> int:
    return "not a number"  # type: ignore[return-value]


@app.task(max_attempts=2, base_delay=0)
def not_json(kind: str):  # type: ignore[no-untyped-def]  # no hint: the output must still be JSON
    return {"value": object()}


# -- time ----------------------------------------------------------------------------------------


@app.task(max_attempts=3, base_delay=0, timeout=30)
def sleeper(seconds: float, tag: Any = None) -> dict[str, Any]:
    time.sleep(seconds)
    return {"slept": seconds, "tag": tag}


# -- shared with a TypeScript worker (tests/e2e_apps/ts_worker.mjs implements the same steps) ----

interop = app.flow("interop", base_delay=0)


@interop.step
def inc(run: dict[str, float]) -> int:
    time.sleep(run.get("sleep", 0.0))
    return int(run["n"]) + 1


@interop.step
def dbl(inc: int) -> int:
    return inc * 2
