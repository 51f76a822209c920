"""``pgflow-kombu demo``: an order flow run end to end through a worker, on whatever database is set.

Shows the pieces working together: a flow defined in Python (a root step, a step fed by it, a map
step fanning out over its output, a step joining them), compiled into pgflow's tables, a worker
riding the kombu transport, and a client waiting for the run by NOTIFY.
"""

from __future__ import annotations

import time

import click
from pydantic import BaseModel

from pgflow_kombu import cli_output as out
from pgflow_kombu.app import PgFlow
from pgflow_kombu.errors import RunFailed

__all__ = ["Charged", "Order", "build_app", "run"]


class Order(BaseModel):
    order_id: int
    items: list[str]
    email: str


class Charged(BaseModel):
    order_id: int
    amount_cents: int


def build_app(url: str) -> PgFlow:
    app = PgFlow(url)
    order = app.flow("demo_process_order", max_attempts=3, timeout=30)

    @order.step
    def validate(run: Order) -> Order:
        if not run.items:
            raise ValueError("an order needs at least one item")
        return run

    @order.step
    def charge(validate: Order) -> Charged:
        return Charged(order_id=validate.order_id, amount_cents=499 * len(validate.items))

    @order.step
    def reserve(validate: Order) -> list[str]:
        return [f"{item}#{n}" for n, item in enumerate(validate.items)]

    @order.map(over="reserve")
    def pack(item: str) -> str:
        # One task per element of reserve's output, run in parallel by the worker.
        return f"box({item})"

    @order.step(depends_on=["charge", "pack", "validate"])
    def notify(charge: Charged, pack: list[str], validate: Order) -> dict[str, object]:
        return {"to": validate.email, "charged": charge.amount_cents, "boxes": pack}

    return app


def run(url: str, *, timeout: float = 60.0) -> int:
    """Run the demo; returns the process exit code."""
    app = build_app(url)
    flow = app.get_flow("demo_process_order")
    app.ensure_flow(flow, recompile=True)
    worker = app.start_worker(concurrency=4)
    try:
        click.echo(f"worker started for {', '.join(app.flows)}")
        started = time.monotonic()
        handle = app.start_flow(
            flow, {"order_id": 42, "items": ["book", "lamp", "mug"], "email": "ada@example.com"}
        )
        click.echo(f"started run {handle.run_id}")
        try:
            finished = app.wait(handle.run_id, timeout=timeout)
        except RunFailed as exc:
            out.show_run(exc.run)  # type: ignore[arg-type]
            return 3
        click.echo(f"run completed in {(time.monotonic() - started) * 1000:.0f} ms\n")
        out.show_run(finished)
        return 0
    finally:
        app.stop_worker(timeout=10)
        app.close()
        del worker
