"""Bad SQL-level input to pgflow's functions, shared by our tests and the differential ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.reference.driver import Db


@dataclass(frozen=True)
class BadCall:
    id: str
    function: str
    args: dict[str, Any]
    sqlstate: str  # what ours raises
    message: str  # a fragment of our message
    # The reference raises another SQLSTATE here (None: the same as ours).
    reference_sqlstate: str | None = None
    setup: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


BASE_FLOW = [
    ("create_flow", {"flow_slug": "base"}),
    ("add_step", {"flow_slug": "base", "step_slug": "a"}),
    ("add_step", {"flow_slug": "base", "step_slug": "b"}),
]
ROOT_MAP_FLOW = [
    ("create_flow", {"flow_slug": "mapped"}),
    ("add_step", {"flow_slug": "mapped", "step_slug": "each", "step_type": "map"}),
]
SLUG_RULES = "letters, digits or underscores"

BAD_CALLS = [
    *(
        BadCall(f"flow_slug_{name}", "create_flow", {"flow_slug": slug}, "23514", SLUG_RULES)
        for name, slug in [
            ("empty", ""),
            ("digit_first", "1flow"),
            ("dash", "my-flow"),
            ("reserved", "run"),
            ("too_long", "f" * 129),
        ]
    ),
    BadCall("flow_slug_null", "create_flow", {"flow_slug": None}, "23502", SLUG_RULES),
    BadCall(
        "flow_slug_longer_than_a_queue_name",
        "create_flow",
        {"flow_slug": "f" * 48},
        "23514",
        "at most 47 characters",
        reference_sqlstate="P0001",
    ),
    *(
        BadCall(f"flow_{opt}", "create_flow", {"flow_slug": "neg", opt: value}, "23514", opt)
        for opt, value in [("max_attempts", -1), ("base_delay", -1), ("timeout", 0)]
    ),
    *(
        BadCall(
            f"step_{opt}",
            "add_step",
            {"flow_slug": "base", "step_slug": "c", opt: value},
            "23514",
            opt,
            setup=BASE_FLOW,
        )
        for opt, value in [
            ("max_attempts", -1),
            ("base_delay", -2),
            ("timeout", 0),
            ("start_delay", -1),
        ]
    ),
    BadCall(
        "step_slug_invalid",
        "add_step",
        {"flow_slug": "base", "step_slug": "bad slug"},
        "23514",
        SLUG_RULES,
        setup=BASE_FLOW,
    ),
    BadCall(
        "step_type_unknown",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "step_type": "fanout"},
        "23514",
        "step_type",
        setup=BASE_FLOW,
    ),
    BadCall(
        "map_with_two_deps",
        "add_step",
        {"flow_slug": "base", "step_slug": "m", "deps_slugs": ["a", "b"], "step_type": "map"},
        "P0001",
        'Map step "m" can have at most one dependency, but 2 were provided: a, b',
        setup=BASE_FLOW,
    ),
    BadCall(
        "missing_dependency",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["a", "nope"]},
        "23503",
        'depends on "nope", which is not a step of that flow',
        setup=BASE_FLOW,
    ),
    BadCall(
        "self_dependency",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["c"]},
        "23514",
        "cannot depend on itself",
        setup=BASE_FLOW,
    ),
    BadCall(
        "step_of_unknown_flow",
        "add_step",
        {"flow_slug": "nowhere", "step_slug": "c"},
        "23503",
        'flow "nowhere" does not exist',
    ),
    BadCall(
        "start_unknown_flow",
        "start_flow",
        {"flow_slug": "nowhere", "input": {}},
        "23503",
        'flow "nowhere" does not exist',
    ),
    BadCall(
        "root_map_object_input",
        "start_flow",
        {"flow_slug": "mapped", "input": {"not": "array"}},
        "P0001",
        "Flow mapped has root map steps but input is not an array (got object)",
        setup=ROOT_MAP_FLOW,
    ),
    BadCall(
        "root_map_null_input",
        "start_flow",
        {"flow_slug": "mapped", "input": None},
        "P0001",
        "Flow mapped has root map steps but input is NULL",
        setup=ROOT_MAP_FLOW,
    ),
    BadCall(
        "null_input",
        "start_flow",
        {"flow_slug": "base", "input": None},
        "23502",
        "must not be NULL",
        setup=BASE_FLOW,
    ),
]


def prepare(db: Db, bad: BadCall) -> dict[str, Any]:
    """Run the case's setup; return the row counts the failing call must leave unchanged."""
    for function, args in bad.setup:
        db.call(function, **args)
    (counts,) = db.execute("sqlcore_row_counts")
    return counts
