"""Conditional steps: when a step runs, and what an unmet condition or a last failure does.

Modelled on pgflow 0.14's step options; the Python names and their pgflow 0.14 counterparts:

========================  =====================  ==========================================
Python (``@flow.step``)   pgflow 0.14 DSL        meaning
========================  =====================  ==========================================
``if_=pattern``           ``if``                 run only if the document contains ``pattern``
``if_not=pattern``        ``ifNot``              run only if it does not contain ``pattern``
``when_unmet=``           ``whenUnmet``          ``"skip"`` (default), ``"skip-cascade"``, ``"fail"``
``when_exhausted=``       ``whenExhausted``      ``"fail"`` (default), ``"skip"``, ``"skip-cascade"``
========================  =====================  ==========================================

A pattern is matched with JSON containment (PostgreSQL's ``@>``: objects match on the keys they
name, recursively; an array matches when it holds the listed elements; scalars are equal)
against the step's *condition document*, the single-step input of pgflow 0.8.1: ``{"run": <run
input>, "<dep>": <dep output>, ...}`` over the dependencies that completed (a skipped one is
absent). So pgflow 0.14's root-step ``if: P`` (matched against the run input) is ``if_={"run": P}``
here, and its dependent-step ``if: P`` (matched against the dependencies' outputs) is ``if_=P``;
a dependent step may also look at the run input. Map steps decide once, on the same document.

Unmet: ``"skip"`` skips the step (its dependents run without its key; a map over it gets no
task and outputs ``[]``), ``"skip-cascade"`` skips it and every step downstream, ``"fail"``
fails it with ``Condition not met``, and the run with it. ``when_exhausted`` applies when a
task's last attempt fails: ``"fail"`` fails the run (pgflow's behaviour), ``"skip"`` /
``"skip-cascade"`` skip the step instead. A skipped leaf is left out of the run output (``None``
when every leaf was skipped). A ``[TYPE_VIOLATION]`` always fails the run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows.binding import RUN_KEY
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json

__all__ = [
    "ConditionShape",
    "StepCondition",
    "WhenExhausted",
    "WhenUnmet",
    "contains",
    "dependents_closure",
]

WhenUnmet = Literal["skip", "skip-cascade", "fail"]
WhenExhausted = Literal["fail", "skip", "skip-cascade"]
_WHEN_UNMET: tuple[str, ...] = get_args(WhenUnmet)
_WHEN_EXHAUSTED: tuple[str, ...] = get_args(WhenExhausted)


class ConditionShape(TypedDict):
    """A step's condition as plain data (in a flow shape); every key present."""

    if_: dict[str, Json] | None
    if_not: dict[str, Json] | None
    when_unmet: WhenUnmet
    when_exhausted: WhenExhausted


@dataclass(frozen=True)
class StepCondition:
    """A step's condition; the default (nothing set) is an unconditional step."""

    if_: dict[str, Json] | None = None
    if_not: dict[str, Json] | None = None
    when_unmet: WhenUnmet = "skip"
    when_exhausted: WhenExhausted = "fail"

    @classmethod
    def build(
        cls,
        *,
        flow_slug: str,
        step_slug: str,
        deps: Collection[str],
        if_: Any = None,
        if_not: Any = None,
        when_unmet: str | None = None,
        when_exhausted: str | None = None,
    ) -> StepCondition:
        """Validate the options of one step (:class:`FlowDefinitionError` naming it)."""

        def error(message: str) -> FlowDefinitionError:
            return FlowDefinitionError(
                f"flow {flow_slug!r} step {step_slug!r}: {message}",
                flow_slug=flow_slug,
                step_slug=step_slug,
            )

        patterns = {"if_": _pattern(if_, "if_", deps, error), "if_not": None}
        patterns["if_not"] = _pattern(if_not, "if_not", deps, error)
        if when_unmet is not None:
            if when_unmet not in _WHEN_UNMET:
                raise error(
                    f"when_unmet must be one of {', '.join(_WHEN_UNMET)}; got {when_unmet!r}"
                )
            if when_unmet != "skip" and patterns["if_"] is None and patterns["if_not"] is None:
                raise error(f"when_unmet={when_unmet!r} needs a condition (if_ or if_not)")
        if when_exhausted is not None and when_exhausted not in _WHEN_EXHAUSTED:
            raise error(
                f"when_exhausted must be one of {', '.join(_WHEN_EXHAUSTED)}; got {when_exhausted!r}"
            )
        return cls(
            patterns["if_"],
            patterns["if_not"],
            when_unmet or "skip",  # type: ignore[arg-type]
            when_exhausted or "fail",  # type: ignore[arg-type]
        )

    @property
    def is_set(self) -> bool:
        """Whether anything differs from an unconditional step."""
        return self != StepCondition()

    @property
    def has_pattern(self) -> bool:
        return self.if_ is not None or self.if_not is not None

    def as_dict(self) -> ConditionShape:
        return {
            "if_": self.if_,
            "if_not": self.if_not,
            "when_unmet": self.when_unmet,
            "when_exhausted": self.when_exhausted,
        }

    def holds(self, document: Json) -> bool:
        """Whether the step runs on this condition document."""
        if self.if_ is not None and not contains(document, self.if_):
            return False
        return self.if_not is None or not contains(document, self.if_not)


def _pattern(value: Any, name: str, deps: Collection[str], error: Any) -> dict[str, Json] | None:
    if value is None:
        return None
    try:
        data = to_json(value)
    except NotJsonError as exc:
        raise error(f"{name} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(
            f"{name} must be an object matched against {{'run': <run input>, <dep>: <output>}}, "
            f"got {type(data).__name__}"
        )
    allowed = [RUN_KEY, *deps]
    for key in data:
        if key not in allowed:
            raise error(
                f"{name} key {key!r} is neither 'run' (the run input) nor a dependency "
                f"({', '.join(deps) or 'none'}); to test the run input write "
                f"{{'run': {{{key!r}: ...}}}}"
            )
    return data


def contains(document: Json, pattern: Json) -> bool:
    """PostgreSQL's ``jsonb @> jsonb``: whether ``document`` contains ``pattern``."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            key in document and contains(document[key], value) for key, value in pattern.items()
        )
    if isinstance(pattern, list):
        if not isinstance(document, list):
            # A top-level array pattern never matches a scalar or object ("@>" is structural).
            return False
        return all(any(_element_contains(d, p) for d in document) for p in pattern)
    if isinstance(document, list):
        return False
    return _scalar_equal(document, pattern)


def _element_contains(element: Json, pattern: Json) -> bool:
    # Inside arrays a scalar pattern matches an equal scalar element; containers recurse.
    if isinstance(pattern, (dict, list)):
        return contains(element, pattern)
    return not isinstance(element, (dict, list)) and _scalar_equal(element, pattern)


def _scalar_equal(a: Json, b: Json) -> bool:
    # JSON true is not 1: compare bools apart from numbers, numbers by value.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def dependents_closure(steps: Mapping[str, Collection[str]], slug: str) -> set[str]:
    """``slug`` and every step downstream of it; ``steps`` maps each slug to its deps."""
    found = {slug}
    changed = True
    while changed:
        changed = False
        for step, deps in steps.items():
            if step not in found and found.intersection(deps):
                found.add(step)
                changed = True
    return found
