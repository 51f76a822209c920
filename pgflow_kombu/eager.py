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
        try:
            output = flow.run_eager(input)
        except StepFailed as exc:
            failed = StepState(
                run_id=run_id,
                flow_slug=flow.slug,
                step_slug=exc.step_slug,
                status="failed",
                remaining_deps=0,
                error_message=str(exc),
                failed_at=now,
            )
            run = Run(
                run_id=run_id,
                flow_slug=flow.slug,
                status="failed",
                input=input,
                started_at=now,
                failed_at=now,
                step_states=(failed,),
            )
            return cls(run, exc)
        run = Run(
            run_id=run_id,
            flow_slug=flow.slug,
            status="completed",
            input=input,
            output=output,
            started_at=now,
            completed_at=now,
        )
        return cls(run, None)

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
