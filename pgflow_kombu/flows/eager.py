"""Running a flow in this process, for users' tests: no worker, no database.

Steps run one after another in definition order (a valid dependency order), each task with the
same input assembly, argument binding and type validation as on a worker, and every output goes
through the same JSON conversion, so what passes here passes in production. The result is the run
output pgflow would store: ``{leaf_slug: output}``.

What differs from a real run: tasks run sequentially, no delays or timeouts apply, and a failing
handler raises :class:`StepFailed` at once unless ``retries=True``, which retries it (without
waiting) up to the step's effective ``max_attempts``, counting attempts as a worker does.

:func:`eager_run` gives the run as the database would hold it (a :class:`~pgflow_kombu.types.Run`
with its step states); ``PgFlow(eager=True)`` starts flows through it, with retries.

Conditional steps behave as in the database (see :mod:`~pgflow_kombu.flows.conditions`): before
each step runs, the conditions of every step whose dependencies are done are decided (an unmet
``"fail"`` first, raising :class:`ConditionNotMet`; then skips, which may make more steps
ready); ``when_exhausted`` turns a last failure into a skip.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pgflow_kombu.compat import Runner
from pgflow_kombu.errors import ConditionNotMet, ConfigurationError, PgFlowError, Reject, StepFailed
from pgflow_kombu.flows.conditions import dependents_closure
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.dispatch import schedule_delay
from pgflow_kombu.flows.inputs import (
    aggregate_map_output,
    condition_document,
    run_output,
    task_inputs,
)
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.types import Run, StepState

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow
    from pgflow_kombu.flows.step import Step

__all__ = ["EagerResult", "EagerRuns", "arun_eager", "eager_result", "eager_run", "run_eager"]

EagerStatus = Literal["created", "completed", "skipped", "failed"]


@dataclass
class EagerResult:
    """What an eager run did: its output, or the error that failed it, and each step's status
    (``created`` for a step the run never reached) with the reason of each skip."""

    output: Json = None
    error: StepFailed | None = None
    statuses: dict[str, EagerStatus] = field(default_factory=dict)
    skip_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> frozenset[str]:
        return frozenset(slug for slug, status in self.statuses.items() if status == "skipped")


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


class _Eager:
    """One eager run's state: outputs of completed steps, statuses, skip reasons."""

    def __init__(self, flow: Flow, run_input: Json) -> None:
        self.flow = flow
        self.run_input = run_input
        self.outputs: dict[str, Json] = {}
        self.result = EagerResult(statuses={s.slug: "created" for s in flow.steps})
        self.graph: Mapping[str, tuple[str, ...]] = {s.slug: s.deps for s in flow.steps}

    def done(self, slug: str) -> bool:
        return self.result.statuses[slug] in ("completed", "skipped")

    def skip(self, step: Step, mode: str, reason: str) -> None:
        slugs = dependents_closure(self.graph, step.slug) if mode == "skip-cascade" else {step.slug}
        for slug in slugs:
            if self.result.statuses[slug] == "created" or slug == step.slug:
                self.result.statuses[slug] = "skipped"
                self.result.skip_reasons[slug] = (
                    reason if slug == step.slug else "dependency_skipped"
                )

    def ready(self) -> list[Step]:
        return [
            s
            for s in self.flow.steps
            if self.result.statuses[s.slug] == "created" and all(self.done(d) for d in s.deps)
        ]

    def resolve(self) -> bool:
        """Decide the conditions of the ready steps; True when some step was skipped."""
        unmet = [
            s
            for s in self.ready()
            if s.condition.has_pattern
            and not s.condition.holds(condition_document(s, self.run_input, self.outputs))
        ]
        for step in unmet:
            if step.condition.when_unmet == "fail":
                self.result.statuses[step.slug] = "failed"
                raise ConditionNotMet(
                    f"flow {step.flow_slug!r} step {step.slug!r}: Condition not met",
                    flow_slug=step.flow_slug,
                    step_slug=step.slug,
                    task_index=0,
                    attempts=0,
                )
        for step in unmet:
            self.skip(step, step.condition.when_unmet, "condition_unmet")
        return bool(unmet)


async def _run(flow: Flow, input: Any, retries: bool, settle: _Settle) -> EagerResult:
    """The eager run, async handlers' coroutines run by ``settle``; never raises StepFailed."""
    state = _Eager(flow, flow.prepare_input(input))
    try:
        while True:
            if state.resolve():
                continue
            ready = state.ready()
            if not ready:
                break
            # Definition order (a dependency order); conditions of every ready step are
            # decided before each step runs, as the database decides them when they get ready.
            await _run_step(state, ready[0], retries, settle)
    except StepFailed as exc:
        state.result.error = exc
        return state.result
    skipped = state.result.skipped
    state.result.output = run_output(flow, state.outputs, skipped)
    return state.result


async def _run_step(state: _Eager, step: Step, retries: bool, settle: _Settle) -> None:
    flow, outputs = state.flow, state.outputs
    if step.is_map and not step.is_root and step.deps[0] not in outputs:
        # A map over a skipped step has no task.
        outputs[step.slug] = []
        state.result.statuses[step.slug] = "completed"
        return
    results: list[Json] = []
    for index, task_input in enumerate(task_inputs(flow, step.slug, state.run_input, outputs)):
        attempts = _attempts(flow, step, retries)
        for attempt in range(1, attempts + 1):
            call = step.prepare(copy.deepcopy(task_input), _context(step, index, attempt))
            try:
                value = call()
                if call.is_async:
                    value = await settle(step, value)
            except Exception as exc:
                if attempt < attempts and not isinstance(exc, Reject):  # Reject: no retry
                    continue
                if step.condition.when_exhausted == "fail":
                    state.result.statuses[step.slug] = "failed"
                    raise _failed(step, index, attempt, exc) from exc
                state.skip(step, step.condition.when_exhausted, "handler_failed")
                return
            results.append(step.finish(value))
            break
    _store(step, outputs, results)
    state.result.statuses[step.slug] = "completed"


def eager_result(flow: Flow, input: Any = None, *, retries: bool = False) -> EagerResult:
    """Like :func:`run_eager`, returning what happened (a failure included) instead of raising
    :class:`StepFailed`."""
    settle = _SyncSettle()
    try:
        return _drive(_run(flow, input, retries, settle))
    finally:
        settle.close()


def eager_run(
    flow: Flow, input: Any = None, *, run_id: uuid.UUID | None = None, retries: bool = True
) -> tuple[Run, StepFailed | None]:
    """Run ``flow`` as :func:`eager_result` does and give the finished run as ``get_run_with_states``
    would read it (a failed step's ``error_message`` is ``"<ExceptionType>: <message>"``, as a
    worker stores it), with the error that failed it, if any."""
    now = datetime.now(timezone.utc)
    run_id = run_id or uuid.uuid4()
    result = eager_result(flow, input, retries=retries)
    error = result.error
    message = None
    if error is not None:
        cause = error.__cause__
        message = str(error) if cause is None else f"{type(cause).__name__}: {cause}"
    states = tuple(
        StepState(
            run_id=run_id,
            flow_slug=flow.slug,
            step_slug=slug,
            status=status,
            remaining_deps=0,
            error_message=message if status == "failed" else None,
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
        input=flow.prepare_input(input),
        output=None if error is not None else result.output,
        started_at=now,
        completed_at=None if error is not None else now,
        failed_at=now if error is not None else None,
        step_states=states,
    )
    return run, error


class EagerRuns:
    """The runs an eager app starts: each runs at once (:func:`eager_run`, with retries).

    ``idempotency_key`` is honoured in memory as the database honours it: a second start of the
    flow with a key already used returns the first run and runs nothing, until the key's
    ``idempotency_ttl`` (when given) has passed. A delay or time in the future cannot be honoured
    by a run that finishes before ``start`` returns: it raises :class:`ConfigurationError`
    (``0`` and past times mean now, as in production).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], tuple[Run, StepFailed | None, float | None]] = {}

    def start(
        self,
        flow: Flow,
        input: Json,
        *,
        run_id: uuid.UUID | None = None,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> tuple[Run, StepFailed | None]:
        if schedule_delay(delay_seconds, scheduled_at) > 0:
            raise ConfigurationError(
                f"flow {flow.slug!r}: an eager app runs flows at once and cannot delay them "
                f"(delay_seconds/countdown={delay_seconds!r}, scheduled_at/eta={scheduled_at!r}): "
                "start it without a delay in tests, or use an app with a database and a worker"
            )
        if idempotency_key is None:
            return eager_run(flow, input, run_id=run_id)
        with self._lock:  # one run per key, also when two threads start at once
            key = (flow.slug, idempotency_key)
            found = self._keys.get(key)
            if found is not None and (found[2] is None or found[2] > time.monotonic()):
                return found[0], found[1]
            run, error = eager_run(flow, input, run_id=run_id)
            expires = None if idempotency_ttl is None else time.monotonic() + idempotency_ttl
            self._keys[key] = (run, error, expires)
            return run, error


def run_eager(flow: Flow, input: Any = None, *, retries: bool = False) -> Json:
    """Run ``flow`` on ``input`` in this thread and return the run output.

    Async handlers run on one event loop created for the run; inside an already running loop use
    :func:`arun_eager`. Raises :class:`StepInputError`/:class:`StepOutputError` for data that
    does not fit, :class:`StepFailed` (the handler's exception as ``__cause__``) for a failing
    handler, :class:`ConditionNotMet` for an unmet condition that fails the run,
    :class:`FlowInputError` for an unusable run input.
    """
    result = eager_result(flow, input, retries=retries)
    if result.error is not None:
        raise result.error
    return result.output


class _SyncSettle:
    """Runs async handlers' coroutines on one event loop created for the run."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    async def __call__(self, step: Step, pending: Coroutine[Any, Any, Any]) -> Any:
        if self.runner is None:
            try:
                self.runner = _new_runner(step)
            except PgFlowError:
                pending.close()
                raise
        return self.runner.run(pending)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


def _drive(run: Coroutine[Any, Any, EagerResult]) -> EagerResult:
    # ``settle`` never suspends, so neither does the run: one send() drives it to its end,
    # which StopIteration carries.
    try:
        run.send(None)
    except StopIteration as done:
        result: EagerResult = done.value
        return result
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
    result = await _run(flow, input, retries, _on_running_loop)
    if result.error is not None:
        raise result.error
    return result.output


async def _on_running_loop(step: Step, pending: Coroutine[Any, Any, Any]) -> Any:
    return await pending
