"""A flow's shape: the plain data the database holds about it, and comparing two shapes.

The shape carries what ``@pgflow/dsl`` compiles to ``pgflow.create_flow`` / ``pgflow.add_step``:
the flow slug and the options that were set, then every step in definition order (its
``step_index``) with slug, dependencies, type, the options that were set and, for a conditional
step only, its ``condition`` (see conditions.py; pgflow 0.14 compares these too). Handlers are not
part of it. The app compares the shape of the code with the one read back from the database
(``pgflow.flows``/``steps``/``deps``) to detect a flow whose definition changed.

A shape read from the database may list every flow option (the columns are never NULL): an
option missing on one side is compared as ``create_flow``'s default, so a flow whose code sets
nothing matches a row holding 3/5/60. Step options are NULL when not set and compare as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from pgflow_kombu.flows.conditions import ConditionShape, StepCondition
from pgflow_kombu.flows.options import CREATE_FLOW_DEFAULTS, FLOW_OPTION_NAMES, STEP_OPTION_NAMES

__all__ = [
    "FlowShape",
    "ShapeDifference",
    "StepShape",
    "add_step_arguments",
    "compare_shapes",
    "create_flow_arguments",
]


class _StepShapeKeys(TypedDict):
    slug: str
    deps: list[str]
    step_type: Literal["single", "map"]
    options: dict[str, int]


class StepShape(_StepShapeKeys, total=False):
    """One step: ``options`` holds only the options that were set (possibly none);
    ``condition`` is there only for a conditional step."""

    condition: ConditionShape


class FlowShape(TypedDict):
    """A flow: ``options`` holds only the flow options that were set; steps in index order."""

    flow_slug: str
    options: dict[str, int]
    steps: list[StepShape]


def create_flow_arguments(shape: FlowShape) -> dict[str, object]:
    """Named arguments of the ``pgflow.create_flow`` call for this shape (set options only)."""
    return {"flow_slug": shape["flow_slug"], **shape["options"]}


def add_step_arguments(shape: FlowShape) -> list[dict[str, object]]:
    """Named arguments of one ``pgflow.add_step`` call per step, in order (set options only).

    ``deps_slugs`` is always present (an empty list for a root step) and ``step_type`` too.
    """
    return [
        {
            "flow_slug": shape["flow_slug"],
            "step_slug": step["slug"],
            "deps_slugs": list(step["deps"]),
            **step["options"],
            "step_type": step["step_type"],
        }
        for step in shape["steps"]
    ]


@dataclass(frozen=True)
class ShapeDifference:
    """One way two shapes differ.

    ``kind`` is ``"structure"`` (slugs, step count, types, dependencies: the flow cannot run as
    the code expects) or ``"options"`` (retry/timeout settings differ: runs work, with the
    database's settings). ``message`` reads "<first> vs <second>", first being the first shape
    given to :func:`compare_shapes` (by convention the code's).
    """

    kind: Literal["structure", "options"]
    message: str

    def __str__(self) -> str:
        return self.message


def _fmt(value: object) -> str:
    return "unset" if value is None else str(value)


def compare_shapes(first: FlowShape, second: FlowShape) -> list[ShapeDifference]:
    """List how ``second`` (e.g. read from the database) differs from ``first`` (the code).

    Steps are compared position by position as pgflow's own shape comparison does (a step's
    index is part of the contract); dependencies as sets. An empty list means the same flow.
    """
    diffs: list[ShapeDifference] = []

    def structure(message: str) -> None:
        diffs.append(ShapeDifference("structure", message))

    def options(message: str) -> None:
        diffs.append(ShapeDifference("options", message))

    if first["flow_slug"] != second["flow_slug"]:
        structure(f"Flow slug differs '{first['flow_slug']}' vs '{second['flow_slug']}'")
    for flow_option in FLOW_OPTION_NAMES:
        default = CREATE_FLOW_DEFAULTS[flow_option]
        first_value = first["options"].get(flow_option, default)
        second_value = second["options"].get(flow_option, default)
        if first_value != second_value:
            options(f"Flow option {flow_option} differs: {first_value} vs {second_value}")

    a_steps, b_steps = first["steps"], second["steps"]
    if len(a_steps) != len(b_steps):
        structure(f"Step count differs: {len(a_steps)} vs {len(b_steps)}")
    for idx in range(max(len(a_steps), len(b_steps))):
        if idx >= len(a_steps):
            slug = b_steps[idx]["slug"]
            structure(f"Step at index {idx}: missing in first shape (second has '{slug}')")
            continue
        if idx >= len(b_steps):
            slug = a_steps[idx]["slug"]
            structure(f"Step at index {idx}: missing in second shape (first has '{slug}')")
            continue
        a, b = a_steps[idx], b_steps[idx]
        if a["slug"] != b["slug"]:
            structure(f"Step at index {idx}: slug differs '{a['slug']}' vs '{b['slug']}'")
        if a["step_type"] != b["step_type"]:
            structure(f"Step at index {idx}: type differs '{a['step_type']}' vs '{b['step_type']}'")
        a_deps, b_deps = sorted(set(a["deps"])), sorted(set(b["deps"]))
        if a_deps != b_deps:
            structure(
                f"Step at index {idx}: dependencies differ [{', '.join(a_deps)}] vs "
                f"[{', '.join(b_deps)}]"
            )
        a_cond, b_cond = _condition(a), _condition(b)
        if a_cond != b_cond:
            structure(
                f"Step at index {idx} ('{a['slug']}'): condition differs {a_cond} vs {b_cond}"
            )
        for name in STEP_OPTION_NAMES:
            av, bv = a["options"].get(name), b["options"].get(name)
            if av != bv:
                options(
                    f"Step at index {idx} ('{a['slug']}'): option {name} differs: "
                    f"{_fmt(av)} vs {_fmt(bv)}"
                )
    return diffs


def _condition(step: StepShape) -> ConditionShape | None:
    """A step's condition for comparison: ``None`` for an unconditional step, however written."""
    data = step.get("condition")
    if not data:
        return None
    full: ConditionShape = {**StepCondition().as_dict(), **data}
    return None if full == StepCondition().as_dict() else full
