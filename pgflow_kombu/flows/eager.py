"""Running a flow in this process, for users' tests: no worker, no database.

Steps run one after another in definition order (a valid dependency order), each task with the
same input assembly, argument binding and type validation as on a worker, and every output goes
through the same JSON conversion, so what passes here passes in production. The result is the run
output pgflow would store: ``{leaf_slug: output}``.

What differs from a real run: tasks run sequentially, no delays or timeouts apply, and a failing
handler raises :class:`StepFailed` at once unless ``retries=True``, which retries it (without
waiting) up to the step's effective ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pgflow_kombu.compat import Runner
from pgflow_kombu.errors import PgFlowError, Reject, StepFailed
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.inputs import aggregate_map_output, run_output, task_inputs
from pgflow_kombu.flows.jsondata import Json

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow
    from pgflow_kombu.flows.step import Step

__all__ = ["arun_eager", "run_eager"]


def _attempts(flow: Flow, step: Step, retries: bool) -> int:
    if not retries:
        return 1
    return max(1, step.options.resolve(flow.options)["max_attempts"])


def _failed(step: Step, index: int, attempts: int, exc: BaseException) -> StepFailed:
    task = f" task {index}" if step.is_map else ""
    plural = "s" if attempts != 1 else ""
    return StepFailed(
        f"flow {step.flow_slug!r} step {step.slug!r}{task} failed after {attempts} attempt"
        f"{plural}: {type(exc).__name__}: {exc}",
        flow_slug=step.flow_slug,
        step_slug=step.slug,
        task_index=index,
        attempts=attempts,
    )


def _context(step: Step, index: int, attempt: int) -> StepContext:
    return StepContext(
        flow_slug=step.flow_slug, step_slug=step.slug, task_index=index, attempt=attempt
    )


def _store(step: Step, outputs: dict[str, Json], results: list[Json]) -> None:
    outputs[step.slug] = aggregate_map_output(results) if step.is_map else results[0]


# Runs the coroutine of an async handler to its value: where the sync and async forms differ.
_Settle = Callable[["Step", Coroutine[Any, Any, Any]], Awaitable[Any]]


async def _run(flow: Flow, input: Any, retries: bool, settle: _Settle) -> Json:
    """The eager run, async handlers' coroutines run by ``settle``; returns the run output."""
    run_input = flow.prepare_input(input)
    outputs: dict[str, Json] = {}
    for step in flow.steps:
        results: list[Json] = []
        for index, task_input in enumerate(task_inputs(flow, step.slug, run_input, outputs)):
            attempts = _attempts(flow, step, retries)
            for attempt in range(1, attempts + 1):
                call = step.prepare(copy.deepcopy(task_input), _context(step, index, attempt))
                try:
                    value = call()
                    if call.is_async:
                        value = await settle(step, value)
                except Exception as exc:
                    if attempt == attempts or isinstance(exc, Reject):  # Reject: no retry
                        raise _failed(step, index, attempt, exc) from exc
                    continue
                results.append(step.finish(value))
                break
        _store(step, outputs, results)
    return run_output(flow, outputs)


def run_eager(flow: Flow, input: Any = None, *, retries: bool = False) -> Json:
    """Run ``flow`` on ``input`` in this thread and return the run output.

    Async handlers run on one event loop created for the run; inside an already running loop use
    :func:`arun_eager`. Raises :class:`StepInputError`/:class:`StepOutputError` for data that
    does not fit, :class:`StepFailed` (the handler's exception as ``__cause__``) for a failing
    handler, :class:`FlowInputError` for an unusable run input.
    """
    runner: Runner | None = None

    async def settle(step: Step, pending: Coroutine[Any, Any, Any]) -> Any:
        nonlocal runner
        if runner is None:
            try:
                runner = _new_runner(step)
            except PgFlowError:
                pending.close()
                raise
        return runner.run(pending)

    # ``settle`` never suspends, so neither does the run: one send() drives it to its end,
    # which StopIteration carries.
    run = _run(flow, input, retries, settle)
    try:
        run.send(None)
    except StopIteration as done:
        output: Json = done.value
        return output
    finally:
        if runner is not None:
            runner.close()
    run.close()
    raise AssertionError("an eager run suspended outside an event loop")


def _new_runner(step: Step) -> Runner:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return Runner()
    raise PgFlowError(
        f"flow {step.flow_slug!r} step {step.slug!r}: the handler is async and an event loop is "
        "already running; use 'await flow.arun_eager(...)'"
    )


async def arun_eager(flow: Flow, input: Any = None, *, retries: bool = False) -> Json:
    """Like :func:`run_eager`, awaiting async handlers on the running loop (sync ones inline)."""
    return await _run(flow, input, retries, _on_running_loop)


async def _on_running_loop(step: Step, pending: Coroutine[Any, Any, Any]) -> Any:
    return await pending
