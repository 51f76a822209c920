"""Flows from plain data, as the Elixir port's ``upsert_flow`` takes them (per-tenant flows).

Same validation as the decorators, plus what only data can get wrong: unknown keys, steps listed
before their dependencies, and dependency cycles (reported as such).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from typing_extensions import Unpack

from pgflow_kombu.flows.conditions import ConditionShape
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.keywords import (
    FlowDataKeywords,
    LimitKeywords,
    StepKeywords,
    check_keywords,
    pick,
)
from pgflow_kombu.flows.options import STEP_OPTION_NAMES

__all__ = ["define_flow"]

_LIMITS = LimitKeywords.__optional_keys__

_STEP_KEYS = frozenset(
    {"slug", "deps", "step_type", "options", "condition", *STEP_OPTION_NAMES, *_LIMITS}
)


def define_flow(
    slug: str,
    *,
    steps: Sequence[Mapping[str, Any]],
    handlers: Mapping[str, Callable[..., Any]] | None = None,
    **options: Unpack[FlowDataKeywords],
) -> Flow:
    """Build a flow from plain data, as the Elixir port's ``upsert_flow`` takes it.

    Each step is a mapping with ``slug`` (required), ``deps`` (default ``[]``), ``step_type``
    (``"single"``, the default, or ``"map"``) and optional ``max_attempts``, ``base_delay``,
    ``timeout``, ``start_delay`` (top-level or inside ``options``, as :meth:`Flow.shape` writes
    them), optional limits ``max_concurrency``, ``rate_limit``, ``concurrency_key`` (top-level,
    as the flow's own limits and ``priority`` are keywords here) and an optional ``condition``
    mapping (``if_``, ``if_not``, ``when_unmet``, ``when_exhausted``: see
    :mod:`~pgflow_kombu.flows.conditions`). Steps must come after their dependencies; a cycle is
    reported as such. ``handlers`` optionally maps step slugs to functions (bound by parameter
    name as with ``@flow.step``); steps without one have a shape but cannot run.
    """
    check_keywords(options, FlowDataKeywords, "define_flow()")
    flow = Flow(slug, **options)
    handlers = dict(handlers or {})
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise flow._error(None, "steps must be a list of step mappings")
    declared = [s.get("slug") for s in steps if isinstance(s, Mapping)]
    for position, data in enumerate(steps):
        if not isinstance(data, Mapping):
            raise flow._error(None, f"step #{position} must be a mapping, got {data!r}")
        step_slug = data.get("slug")
        unknown = set(data) - _STEP_KEYS
        if step_slug is None:
            raise flow._error(None, f"step #{position} has no 'slug'")
        if unknown:
            raise flow._error(str(step_slug), f"unknown keys {sorted(unknown)}")
        deps = list(data.get("deps") or [])
        for dep in deps:
            if dep not in flow and dep in declared and dep != step_slug:
                _raise_order_error(flow, steps, str(step_slug), dep)
        step_options: dict[str, Any] = {
            **dict(data.get("options") or {}),
            **{k: data[k] for k in STEP_OPTION_NAMES if k in data},
        }
        unknown_options = set(step_options) - set(STEP_OPTION_NAMES)
        if unknown_options:
            raise flow._error(str(step_slug), f"unknown options {sorted(unknown_options)}")
        condition = data.get("condition") or {}
        if not isinstance(condition, Mapping):
            raise flow._error(str(step_slug), f"condition must be a mapping, got {condition!r}")
        unknown_condition = set(condition) - set(ConditionShape.__annotations__)
        if unknown_condition:
            raise flow._error(str(step_slug), f"unknown condition keys {sorted(unknown_condition)}")
        flow.add_step(
            step_slug,
            handlers.pop(step_slug, None),
            depends_on=deps,
            step_type=data.get("step_type", "single"),
            **pick(
                {**step_options, **condition, **{k: v for k, v in data.items() if k in _LIMITS}},
                StepKeywords,
            ),  # all checked above
        )
    if handlers:
        raise flow._error(None, f"handlers given for unknown steps: {sorted(handlers)}")
    return flow


def _raise_order_error(
    flow: Flow, steps: Sequence[Mapping[str, Any]], step_slug: str, dep: str
) -> None:
    graph = {str(s.get("slug")): [str(d) for d in s.get("deps") or []] for s in steps}
    path = _find_cycle(graph, step_slug)
    if path:
        raise flow._error(step_slug, f"dependency cycle: {' -> '.join(path)}")
    raise flow._error(step_slug, f"depends on step {dep!r}, which is defined later; list it first")


def _find_cycle(graph: Mapping[str, Sequence[str]], start: str) -> list[str] | None:
    """A dependency path from ``start`` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for dep in graph.get(node, ()):
            if dep == start:
                return [*path, dep]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None
