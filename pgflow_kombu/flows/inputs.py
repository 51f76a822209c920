"""What pgflow hands each task, computed without a database (the assembly of ``start_tasks``).

Used by eager execution and by tests that want to know what a step will receive. The rules are
pgflow 0.8.1's:

* a single step's one task gets ``{"run": <run input>, "<dep>": <dep output>, ...}``;
* a root map step gets one task per element of the run input (which must be an array);
* a dependent map step gets one task per element of its dependency's output, which must be an
  array - else the run fails with a ``[TYPE_VIOLATION]`` error blamed on the producing step;
* a map step's output is the array of its task outputs in ``task_index`` order (``[]`` for none);
* the run's output is ``{leaf_slug: output}`` over steps no other step depends on (``None`` for
  a flow without steps).

With conditional steps (pgflow 0.14's semantics): a skipped dependency's key is absent from a
single step's input and from the condition document, and a skipped leaf is absent from the run
output (``None`` when every leaf was skipped).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from pgflow_kombu.errors import FlowInputError, StepOutputError
from pgflow_kombu.flows.binding import RUN_KEY
from pgflow_kombu.flows.jsondata import Json, json_type_name

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow
    from pgflow_kombu.flows.step import Step

__all__ = [
    "aggregate_map_output",
    "check_root_map_input",
    "condition_document",
    "run_output",
    "single_task_input",
    "task_inputs",
]


def check_root_map_input(flow: Flow, run_input: Json) -> None:
    """Raise :class:`FlowInputError` as ``pgflow.start_flow`` does for a root map's bad input."""
    if not any(s.is_map and s.is_root for s in flow.steps):
        return
    if run_input is None:
        raise FlowInputError(f"Flow {flow.slug} has root map steps but input is NULL")
    if not isinstance(run_input, list):
        raise FlowInputError(
            f"Flow {flow.slug} has root map steps but input is not an array "
            f"(got {json_type_name(run_input)})"
        )


def single_task_input(step: Step, run_input: Json, outputs: Mapping[str, Json]) -> dict[str, Json]:
    """The input of a single step's task: the run input under ``run`` plus each dep's output
    (a dependency missing from ``outputs``, a skipped one, has no key)."""
    data: dict[str, Json] = {RUN_KEY: run_input}
    for dep in step.deps:
        if dep in outputs:
            data[dep] = outputs[dep]
    return data


def condition_document(step: Step, run_input: Json, outputs: Mapping[str, Json]) -> Json:
    """What a step's condition is matched against: its single-step input, for map steps too."""
    return single_task_input(step, run_input, outputs)


def task_inputs(
    flow: Flow, step_slug: str, run_input: Json, outputs: Mapping[str, Json]
) -> list[Json]:
    """The inputs of every task of a step, in ``task_index`` order.

    ``outputs`` holds the output of every dependency (a map dependency's aggregated array).
    Raises :class:`FlowInputError` for a root map over a non-array run input and
    :class:`StepOutputError` (blaming the dependency, message ``[TYPE_VIOLATION] ...``) for a
    dependent map whose dependency did not produce an array.
    """
    step = flow.get_step(step_slug)
    if not step.is_map:
        return [single_task_input(step, run_input, outputs)]
    if step.is_root:
        check_root_map_input(flow, run_input)
        assert isinstance(run_input, list)
        return list(run_input)
    dep = step.deps[0]
    source = outputs[dep]
    if not isinstance(source, list):
        raise StepOutputError(
            f"[TYPE_VIOLATION] Map step {step.slug} expects array input but dependency {dep} "
            f"produced {json_type_name(source)}",
            flow_slug=flow.slug,
            step_slug=dep,
        )
    return list(source)


def aggregate_map_output(task_outputs: Mapping[int, Json] | Sequence[Json]) -> list[Json]:
    """A map step's output: its task outputs ordered by ``task_index`` (a mapping or a list)."""
    if isinstance(task_outputs, Mapping):
        return [task_outputs[i] for i in sorted(task_outputs)]
    return list(task_outputs)


def run_output(flow: Flow, outputs: Mapping[str, Json], skipped: Collection[str] = ()) -> Json:
    """The run's output: ``{leaf: output}`` for every leaf step that was not skipped; ``None``
    for an empty flow or when every leaf was skipped."""
    leaves = {slug: outputs[slug] for slug in flow.leaves if slug not in skipped}
    return leaves or None
