"""The flow-control test app: tasks with concurrency and rate limits whose handlers record when
they ran (their output, and a start marker file for attempts that may be killed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pgflow_kombu import PgFlow, Reject
from pgflow_kombu.flows import StepContext

app = PgFlow()


def _ran(ctx: StepContext, seconds: float, **extra: Any) -> dict[str, Any]:
    """Sleep, recording the attempt's start (a marker file when LIMITS_MARKS is set) and end."""
    start = time.time()
    marks = os.environ.get("LIMITS_MARKS")
    if marks:
        mark = {"run_id": ctx.run_id, "attempt": ctx.attempt, "pid": os.getpid(), "start": start}
        path = Path(marks) / f"{ctx.run_id}.{ctx.attempt}.json"
        path.write_text(json.dumps(mark))
    time.sleep(seconds)
    return {"start": start, "end": time.time(), "pid": os.getpid(), **extra}


@app.task(max_concurrency=2, max_attempts=3, base_delay=0)
def two_at_a_time(n: int, ctx: StepContext) -> dict[str, Any]:
    return _ran(ctx, 0.3, n=n)


@app.task(max_concurrency=1, concurrency_key="customer", base_delay=0)
def one_per_customer(customer: str, n: int, ctx: StepContext) -> dict[str, Any]:
    return _ran(ctx, 0.2, customer=customer)


@app.task(rate_limit="4/2s", base_delay=0)
def rated(n: int, ctx: StepContext) -> dict[str, Any]:
    return _ran(ctx, 0.0)


@app.task(max_concurrency=1, max_attempts=3, base_delay=0, timeout=30)
def solo(n: int, ctx: StepContext) -> dict[str, Any]:
    return _ran(ctx, 1.0)


# A flow whose steps have limits of their own, keyed by a function of the run input.
staged = app.flow("staged", base_delay=0)


@staged.step(max_concurrency=1, concurrency_key=lambda run: run["region"])
def fetch(run: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return _ran(ctx, 0.2, region=run["region"])


class PaymentDeclined(Reject):
    """A business error: retrying cannot help."""


@app.task(max_attempts=3, base_delay=0)
def declines(n: int) -> int:
    raise PaymentDeclined(f"card {n} declined")


@app.task(max_attempts=3, base_delay=0)
def flaky(n: int) -> int:
    raise ValueError(f"try again {n}")


@app.task(max_attempts=3, base_delay=0)
def typed(n: int) -> int:
    return n * 2
