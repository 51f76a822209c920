"""What a handler may learn about the task it is running.

A handler receives a :class:`StepContext` when one of its parameters is annotated with it (any
parameter name); the parameter is then not an input and names no dependency::

    @flow.step
    def charge(validate: Validated, ctx: StepContext) -> Receipt:
        log.info("run %s attempt %d", ctx.run_id, ctx.attempt)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StepContext"]


@dataclass(frozen=True)
class StepContext:
    """Facts about one attempt of one task.

    ``run_id`` is ``None`` and ``worker_id``/``msg_id`` are ``None`` in eager execution.
    ``attempt`` counts from 1 (pgflow's ``attempts_count`` after ``start_tasks``).
    """

    flow_slug: str
    step_slug: str
    run_id: str | None = None
    task_index: int = 0
    attempt: int = 1
    msg_id: int | None = None
    worker_id: str | None = None
