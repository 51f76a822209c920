"""What a handler may learn about the task it is running.

A handler receives a :class:`StepContext` when one of its parameters is annotated with it (any
parameter name); the parameter is then not an input and names no dependency::

    @flow.step
    def charge(validate: Validated, ctx: StepContext) -> Receipt:
        log.info("run %s attempt %d", ctx.run_id, ctx.attempt)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["StepContext"]


@dataclass(frozen=True)
class StepContext:
    """Facts about one attempt of one task.

    ``run_id`` is ``None`` and ``worker_id``/``msg_id`` are ``None`` in eager execution.
    ``attempt`` counts from 1 (pgflow's ``attempts_count`` after ``start_tasks``).
    ``cancelled`` turns true while the handler runs once its run was cancelled (the worker
    learns it at its next heartbeat): a long handler may check it and stop early; whatever it
    returns then is discarded. Handlers in the process pool never see it turn true.
    """

    flow_slug: str
    step_slug: str
    run_id: str | None = None
    task_index: int = 0
    attempt: int = 1
    msg_id: int | None = None
    worker_id: str | None = None
    cancel_event: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once this task's run was cancelled."""
        return self.cancel_event is not None and self.cancel_event.is_set()
