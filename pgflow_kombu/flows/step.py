"""One step of a flow: its place in the DAG, its options and how to run its handler.

Workers use three calls per task: :meth:`Step.prepare` (task input -> validated call),
calling the handler, :meth:`Step.finish` (return value -> validated JSON output); or the
shortcuts :meth:`Step.execute` / :meth:`Step.aexecute` that do all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pgflow_kombu.errors import FlowDefinitionError, PgFlowError
from pgflow_kombu.flows.binding import Binder, StepWhere
from pgflow_kombu.flows.conditions import StepCondition
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.handler import Handler
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.flows.options import Limits, StepOptions
from pgflow_kombu.flows.shapes import StepShape

__all__ = ["PreparedCall", "Step", "StepType"]

StepType = Literal["single", "map"]
STEP_TYPES: tuple[StepType, ...] = ("single", "map")


@dataclass(frozen=True)
class PreparedCall:
    """A validated call of a handler, ready to run (in any thread or process pool slot)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    is_async: bool

    def __call__(self) -> Any:
        """Call the handler; for an async handler this returns the coroutine, not awaited."""
        return self.fn(*self.args, **self.kwargs)


@dataclass(frozen=True, eq=False)
class Step:
    """A step as pgflow sees it (slug, deps, type, options) plus the code that runs it.

    ``handler`` and ``binder`` are ``None`` for a step defined from plain data without code;
    such a step has a shape but cannot run. ``index`` is its position in the flow (pgflow's
    ``step_index``). ``condition`` says when it runs (see :mod:`~pgflow_kombu.flows.conditions`).
    """

    flow_slug: str
    slug: str
    index: int
    deps: tuple[str, ...]
    step_type: StepType
    options: StepOptions
    handler: Handler | None = None
    binder: Binder | None = None
    condition: StepCondition = field(default_factory=StepCondition)
    limits: Limits = field(default_factory=Limits)

    @property
    def is_map(self) -> bool:
        """Whether pgflow runs one task per array element for this step."""
        return self.step_type == "map"

    @property
    def is_root(self) -> bool:
        """Whether the step has no dependencies (it starts with the run)."""
        return not self.deps

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function."""
        return self.handler is not None and self.handler.is_async

    def shape(self) -> StepShape:
        """The step as plain data: slug, deps, step_type, the options that were set and, for a
        conditional step, its condition."""
        shape: StepShape = {
            "slug": self.slug,
            "deps": list(self.deps),
            "step_type": self.step_type,
            "options": self.options.as_dict(),
        }
        if self.condition.is_set:
            shape["condition"] = self.condition.as_dict()
        return shape

    def _runnable(self) -> tuple[Handler, Binder]:
        if self.handler is None or self.binder is None:
            raise FlowDefinitionError(
                f"flow {self.flow_slug!r} step {self.slug!r} has no handler: it was defined "
                "from data; attach code before running it",
                flow_slug=self.flow_slug,
                step_slug=self.slug,
            )
        return self.handler, self.binder

    def prepare(self, task_input: Any, context: StepContext | None = None) -> PreparedCall:
        """Build the validated handler call for one task input as ``start_tasks`` returns it.

        Raises :class:`StepInputError` (naming flow, step and field) when the input does not fit.
        """
        handler, binder = self._runnable()
        args, kwargs = binder.bind(task_input, StepWhere(self.flow_slug, self.slug))
        call_args, call_kwargs = handler.validate_call(args, kwargs, context)
        return PreparedCall(handler.fn, call_args, call_kwargs, handler.is_async)

    def finish(self, result: Any) -> Json:
        """Validate a handler's return value and convert it to the JSON output to store.

        Raises :class:`StepOutputError` when it does not fit the return hint or is not JSON.
        """
        handler, _ = self._runnable()
        return handler.dump_output(result)

    def execute(self, task_input: Any, context: StepContext | None = None) -> Json:
        """Prepare, call and finish in the calling thread; async handlers get ``asyncio.run``.

        Inside a running event loop use :meth:`aexecute` for async handlers.
        """
        call = self.prepare(task_input, context)
        if not call.is_async:
            return self.finish(call())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.finish(asyncio.run(cast(Awaitable[Any], call())))  # type: ignore[arg-type]
        raise PgFlowError(
            f"flow {self.flow_slug!r} step {self.slug!r}: the handler is async and an event loop "
            "is running in this thread; use 'await step.aexecute(...)'"
        )

    async def aexecute(self, task_input: Any, context: StepContext | None = None) -> Json:
        """Prepare, call (awaiting async handlers; sync ones run inline) and finish."""
        call = self.prepare(task_input, context)
        result = call()
        if call.is_async:
            result = await result
        return self.finish(result)
