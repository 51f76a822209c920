"""Running one attempt of a task: input -> validated handler call -> JSON output.

Shared by every pool: thread slots call :func:`execute`, process children call it in the child,
the asyncio pool calls :func:`aexecute`. Errors never escape: they become the ``error`` text that
``fail_task`` stores (``"<ExceptionType>: <message>"``) plus a traceback for the logs. A
:class:`~pgflow_kombu.errors.Reject` (or subclass) and a :class:`StepInputError` (the input does not
fit the handler: a retry would get the same input) are final: the task fails without retries.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pgflow_kombu.errors import Reject, StepInputError
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.flows.schedules import ScheduleSpec
from pgflow_kombu.flows.step import PreparedCall
from pgflow_kombu.worker.tasks import ClaimedTask, error_text

__all__ = ["FlowLike", "Result", "StepLike", "aexecute", "execute", "find_step"]


class StepLike(Protocol):
    def prepare(self, task_input: Any, context: StepContext | None = None) -> PreparedCall: ...

    def finish(self, result: Any) -> Json: ...


class FlowLike(Protocol):
    """What the worker needs of a flow (``pgflow_kombu.flows.Flow`` is one)."""

    @property
    def slug(self) -> str: ...

    @property
    def steps(self) -> Sequence[object]:
        """The flow's steps (the worker's banner counts them)."""
        ...

    @property
    def schedules(self) -> Sequence[ScheduleSpec]:
        """The schedules the flow's code defines (written to the database at start)."""
        ...

    def get_step(self, step_slug: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Result:
    """What a handler call produced: output, or error text + traceback. Picklable."""

    output: Json = None
    error: str | None = None
    traceback: str | None = None
    duration: float = 0.0
    final: bool = False  # a failure not to retry (Reject, an input that fails validation)


class UnknownFlow(LookupError):
    """The worker was handed a task of a flow or step it has no code for."""


def find_step(flows: Mapping[str, FlowLike], flow_slug: str, step_slug: str) -> StepLike:
    flow = flows.get(flow_slug)
    if flow is None:
        raise UnknownFlow(f"this worker has no flow {flow_slug!r} (it serves {sorted(flows)})")
    step: StepLike = flow.get_step(step_slug)
    return step


def context_of(task: ClaimedTask) -> StepContext:
    return StepContext(
        flow_slug=task.flow_slug,
        step_slug=task.step_slug,
        run_id=task.run_id,
        task_index=task.task_index,
        attempt=task.attempt,
        msg_id=task.msg_id,
        worker_id=task.worker_id,
        cancel_event=task.cancel,
    )


def _failure(exc: BaseException, started: float) -> Result:
    return Result(
        error=error_text(exc),
        traceback="".join(traceback.format_exception(exc)),
        duration=time.perf_counter() - started,
        final=isinstance(exc, (Reject, StepInputError)),
    )


def _skipped_as_cancelled(task: ClaimedTask) -> Result | None:
    """A task whose run was cancelled while it waited for a slot is not run at all."""
    if task.cancelled:
        return Result(error=f"CancelledError: run {task.run_id} was cancelled")
    return None


def execute(flows: Mapping[str, FlowLike], task: ClaimedTask) -> Result:
    """Run one attempt in the calling thread (an async handler gets its own event loop)."""
    skipped = _skipped_as_cancelled(task)
    if skipped is not None:
        return skipped
    started = time.perf_counter()
    try:
        step = find_step(flows, task.flow_slug, task.step_slug)
        call = step.prepare(task.input, context_of(task))
        value = call()
        if call.is_async or inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        output = step.finish(value)
    except Exception as exc:
        return _failure(exc, started)
    return Result(output=output, duration=time.perf_counter() - started)


async def aexecute(
    flows: Mapping[str, FlowLike],
    task: ClaimedTask,
    run_sync: Callable[[Callable[[], Any]], Awaitable[Any]],
) -> Result:
    """Run one attempt on the running event loop; sync handlers go through ``run_sync``."""
    skipped = _skipped_as_cancelled(task)
    if skipped is not None:
        return skipped
    started = time.perf_counter()
    try:
        step = find_step(flows, task.flow_slug, task.step_slug)
        call = step.prepare(task.input, context_of(task))
        if call.is_async:
            value = await _await(call())
        else:
            value = await run_sync(call)
            if inspect.isawaitable(value):
                value = await value
        output = step.finish(value)
    except Exception as exc:
        return _failure(exc, started)
    return Result(output=output, duration=time.perf_counter() - started)


async def _await(value: Any) -> Any:
    return await value
