"""Eager runs for ``PgFlow(eager=True)``: the flow runs in the caller's thread, no worker, no database.

The handle it returns behaves like a :class:`~pgflow_kombu.handles.RunHandle` whose run has already
finished, so code under test that calls ``.wait()`` / ``.get()`` / ``.status`` works unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from pgflow_kombu.errors import RunFailed, StepFailed
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.eager import eager_result
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.types import Run, StepState


class EagerHandle:
    """A finished in-process run with the :class:`RunHandle` reading interface."""

    def __init__(self, run: Run, error: StepFailed | None) -> None:
        self._run = run
        self._error = error
        self.run_id = run.run_id
        self.flow_slug = run.flow_slug

    @classmethod
    def run(cls, flow: Flow, input: Json) -> EagerHandle:
        now = datetime.now(timezone.utc)
        run_id = uuid.uuid4()
        result = eager_result(flow, input)
        error = result.error
        states = tuple(
            StepState(
                run_id=run_id,
                flow_slug=flow.slug,
                step_slug=slug,
                status=status,
                remaining_deps=0,
                error_message=str(error) if error is not None and status == "failed" else None,
                skip_reason=result.skip_reasons.get(slug),
                completed_at=now if status in ("completed", "skipped") else None,
                failed_at=now if status == "failed" else None,
            )
            for slug, status in result.statuses.items()
        )
        run = Run(
            run_id=run_id,
            flow_slug=flow.slug,
            status="failed" if error is not None else "completed",
            input=input,
            output=None if error is not None else result.output,
            started_at=now,
            completed_at=None if error is not None else now,
            failed_at=now if error is not None else None,
            step_states=states,
        )
        return cls(run, error)

    def __repr__(self) -> str:
        return f"<EagerHandle {self.flow_slug} {self.run_id} {self._run.status}>"

    def __str__(self) -> str:
        return str(self.run_id)

    def refresh(self) -> Run:
        return self._run

    @property
    def status(self) -> str:
        return self._run.status

    @property
    def output(self) -> Any:
        return self._run.output

    def wait(self, timeout: float | None = 60.0, *, raise_on_failure: bool = True) -> Run:
        if self._error is not None and raise_on_failure:
            raise RunFailed(str(self._error), run=self._run) from self._error
        return self._run

    def get(self, timeout: float | None = 60.0) -> Any:
        return self.wait(timeout).output
