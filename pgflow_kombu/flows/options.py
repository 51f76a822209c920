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

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from pgflow_kombu.errors import FlowDefinitionError

__all__ = [
    "CREATE_FLOW_DEFAULTS",
    "FLOW_OPTION_NAMES",
    "INT4_MAX",
    "STEP_OPTION_NAMES",
    "FlowOptions",
    "Limits",
    "StepOptions",
    "check_priority",
    "parse_rate",
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


# -- flow control (pgflow-kombu's own options, kept in its schema: sql/migrations/0060) --------

ConcurrencyKey = str | Callable[[Any], Any]
"""A run input's field name, or a function of the run input; its value (as text) is the key."""

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|sec|second|m|min|minute|h|hour)s?\s*$")
_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: str, where: str) -> tuple[int, float]:
    """``"100/m"`` -> (100 tokens, 60.0 s); also ``"5/s"``, ``"10/30s"``, ``"1000/h"``."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) < 1 or int(match[1]) > INT4_MAX:
        raise FlowDefinitionError(
            f"{where}: rate_limit must look like '100/m' (a positive count per s, m or h, "
            f"optionally '10/30s'), got {value!r}"
        )
    span = float(match[2]) if match[2] else 1.0
    if span <= 0:
        raise FlowDefinitionError(f"{where}: rate_limit's period must be positive, got {value!r}")
    return int(match[1]), span * _UNIT[match[3]]


@dataclass(frozen=True)
class Limits:
    """Flow-control options of a flow or a step (enforced when our workers claim tasks).

    ``max_concurrency``: at most that many tasks of the flow (or step) running across all
    workers; ``rate_limit``: at most ``"N/period"`` tasks started, a token bucket holding N;
    ``concurrency_key``: both apply per key instead, the key computed from the run input when
    the run starts (a field name, or a function); ``priority``: a flow's default run priority
    (higher first; runs started with ``priority=`` override it).
    """

    max_concurrency: int | None = None
    rate_limit: str | None = None
    concurrency_key: ConcurrencyKey | None = None
    priority: int | None = None

    def validate(self, where: str, *, flow: bool) -> Limits:
        value = self.max_concurrency
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT4_MAX
        ):
            raise FlowDefinitionError(
                f"{where}: max_concurrency must be a positive integer, got {value!r}"
            )
        if self.rate_limit is not None:
            parse_rate(self.rate_limit, where)
        key = self.concurrency_key
        if key is not None and not (isinstance(key, str) and key) and not callable(key):
            raise FlowDefinitionError(
                f"{where}: concurrency_key must be a field name or a function of the run input, "
                f"got {key!r}"
            )
        if key is not None and self.max_concurrency is None and self.rate_limit is None:
            raise FlowDefinitionError(
                f"{where}: concurrency_key needs max_concurrency or rate_limit to apply per key"
            )
        if self.priority is not None:
            if not flow:
                raise FlowDefinitionError(f"{where}: priority is an option of flows, not steps")
            check_priority(self.priority, where)
        return self

    @property
    def active(self) -> bool:
        return self.max_concurrency is not None or self.rate_limit is not None

    def row(self, where: str) -> dict[str, Any]:
        """What ``pgflow_kombu.set_flow_limits`` stores for this scope."""
        rate = parse_rate(self.rate_limit, where) if self.rate_limit is not None else None
        key = self.concurrency_key
        return {
            "max_concurrency": self.max_concurrency,
            "rate_count": rate[0] if rate else None,
            "rate_period": rate[1] if rate else None,
            "keyed": key is not None,
            "key_field": key if isinstance(key, str) else None,
            "priority": self.priority,
        }

    def key_of(self, run_input: Any) -> str | None:
        """The run's key for these limits (None: not keyed, or computed by the database from
        the field name)."""
        key = self.concurrency_key
        if key is None:
            return None
        if isinstance(key, str):
            value = run_input.get(key) if isinstance(run_input, dict) else None
        else:
            value = key(run_input)
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_priority(value: object, where: str) -> int:
    """A priority is an integer (higher runs first); raises FlowDefinitionError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > INT4_MAX:
        raise FlowDefinitionError(f"{where}: priority must be an integer, got {value!r}")
    return value
