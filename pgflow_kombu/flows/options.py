"""Runtime options of flows and steps, with the ranges the pgflow schema enforces.

Flow options (``max_attempts``, ``base_delay``, ``timeout``) become arguments of
``pgflow.create_flow``; step options (the same plus ``start_delay``) of ``pgflow.add_step``. An
option left as ``None`` is not passed, exactly as ``@pgflow/dsl`` compiles: the flow then gets
``create_flow``'s default (:data:`CREATE_FLOW_DEFAULTS`) and a step inherits the flow's value.
All values are whole seconds / counts because the columns are integers: each lies between the
schema's check constraint and the largest ``integer`` (:data:`INT4_MAX`), so a definition that
passes here is never refused by the database later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from pgflow_kombu.errors import FlowDefinitionError

__all__ = [
    "CREATE_FLOW_DEFAULTS",
    "FLOW_OPTION_NAMES",
    "INT4_MAX",
    "STEP_OPTION_NAMES",
    "FlowOptions",
    "StepOptions",
]

FlowOptionName = Literal["max_attempts", "base_delay", "timeout"]
StepOptionName = Literal["max_attempts", "base_delay", "timeout", "start_delay"]

FLOW_OPTION_NAMES: tuple[FlowOptionName, ...] = ("max_attempts", "base_delay", "timeout")
STEP_OPTION_NAMES: tuple[StepOptionName, ...] = (
    "max_attempts",
    "base_delay",
    "timeout",
    "start_delay",
)

CREATE_FLOW_DEFAULTS: dict[str, int] = {"max_attempts": 3, "base_delay": 5, "timeout": 60}
"""What ``pgflow.create_flow`` stores for a flow option that is not passed (0.8.1)."""

INT4_MAX = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column (every option's column)."""

# Smallest allowed value of each option: the schema's check constraints.
_MINIMUM = {"max_attempts": 0, "base_delay": 0, "timeout": 1, "start_delay": 0}
_RULE = {
    "max_attempts": "a non-negative integer",
    "base_delay": "a non-negative integer (seconds)",
    "timeout": "a positive integer (seconds)",
    "start_delay": "a non-negative integer (seconds)",
}


def _check(name: str, value: object, where: str) -> None:
    if value is None:
        return
    # bool is an int subclass; True as a timeout is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise FlowDefinitionError(f"{where}: {name} must be {_RULE[name]}, got {value!r}")
    if value < _MINIMUM[name]:
        raise FlowDefinitionError(f"{where}: {name} must be {_RULE[name]}, got {value}")
    if value > INT4_MAX:
        raise FlowDefinitionError(
            f"{where}: {name} must be at most {INT4_MAX} (its column is an integer), got {value}"
        )


@dataclass(frozen=True)
class FlowOptions:
    """Options of a flow; ``None`` means "not set" (``create_flow``'s default applies)."""

    max_attempts: int | None = None
    base_delay: int | None = None
    timeout: int | None = None

    def validate(self, flow_slug: str) -> FlowOptions:
        """Raise :class:`FlowDefinitionError` naming the flow when an option is out of range."""
        for f in fields(self):
            try:
                _check(f.name, getattr(self, f.name), f"flow {flow_slug!r}")
            except FlowDefinitionError as exc:
                exc.flow_slug = flow_slug
                raise
        return self

    def as_dict(self) -> dict[str, int]:
        """The options that were set, by name (the keyword arguments for ``create_flow``)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def effective(self) -> dict[str, int]:
        """Every option as the database stores it: set values, else ``create_flow``'s defaults."""
        return {**CREATE_FLOW_DEFAULTS, **self.as_dict()}


@dataclass(frozen=True)
class StepOptions:
    """Options of a step; ``None`` means "not set" (the flow's value applies)."""

    max_attempts: int | None = None
    base_delay: int | None = None
    timeout: int | None = None
    start_delay: int | None = None

    def validate(self, flow_slug: str, step_slug: str) -> StepOptions:
        """Raise :class:`FlowDefinitionError` naming flow and step when an option is out of range."""
        for f in fields(self):
            try:
                _check(f.name, getattr(self, f.name), f"flow {flow_slug!r} step {step_slug!r}")
            except FlowDefinitionError as exc:
                exc.flow_slug, exc.step_slug = flow_slug, step_slug
                raise
        return self

    def as_dict(self) -> dict[str, int]:
        """The options that were set, by name (the keyword arguments for ``add_step``)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def resolve(self, flow: FlowOptions) -> dict[str, int]:
        """Effective ``max_attempts``/``base_delay``/``timeout``/``start_delay`` of the step.

        Step value, else flow value, else ``create_flow``'s default; ``start_delay`` defaults to 0.
        This is what pgflow's SQL uses when it retries, times out or delays a task.
        """
        merged = {**flow.effective(), "start_delay": 0}
        merged.update(self.as_dict())
        return merged
