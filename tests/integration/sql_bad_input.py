"""Bad SQL-level input to pgflow's functions and what pgflow 0.8.1 raises for it.

Shared by our tests (test_sql_validation: our schema raises exactly this) and the differential
ones (test_differential_errors: the reference schema raises exactly this too, with the same
detail, constraint, table and column). Most errors come from the tables' constraints: not-null
first, then the check constraints in name order, then unique keys, then foreign keys at the end
of the statement.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.reference.driver import Db

Calls = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class BadCall:
    id: str
    function: str
    args: dict[str, Any]
    sqlstate: str
    message: str  # the whole primary message, as pgflow 0.8.1 raises it
    setup: Calls = field(default_factory=list)


def check(table: str, constraint: str) -> str:
    return f'new row for relation "{table}" violates check constraint "{constraint}"'


def not_null(table: str, column: str) -> str:
    return f'null value in column "{column}" of relation "{table}" violates not-null constraint'


def foreign_key(table: str, constraint: str) -> str:
    return f'insert or update on table "{table}" violates foreign key constraint "{constraint}"'


RUN = uuid.UUID("11111111-1111-4111-8111-111111111111")
UNKNOWN_WORKER = uuid.UUID("99999999-9999-4999-8999-999999999999")
CASCADE_LIMIT = "Cascade loop exceeded safety limit of 50 iterations"

BASE_FLOW: Calls = [
    ("create_flow", {"flow_slug": "base"}),
    ("add_step", {"flow_slug": "base", "step_slug": "a"}),
    ("add_step", {"flow_slug": "base", "step_slug": "b"}),
]
BASE_RUN: Calls = [*BASE_FLOW, ("start_flow", {"flow_slug": "base", "input": {}, "run_id": RUN})]
ROOT_MAP_FLOW: Calls = [
    ("create_flow", {"flow_slug": "mapped"}),
    ("add_step", {"flow_slug": "mapped", "step_slug": "each", "step_type": "map"}),
]


def map_chain(flow: str, maps: int, *, after_single: bool = False) -> Calls:
    """A flow of ``maps`` map steps each over the previous one (the first over the run input, or
    over a single step "list"): an empty array leaves them all taskless, one cascade pass each."""
    calls: Calls = [("create_flow", {"flow_slug": flow})]
    previous = None
    if after_single:
        calls.append(("add_step", {"flow_slug": flow, "step_slug": "list"}))
        previous = "list"
    for i in range(maps):
        args: dict[str, Any] = {"flow_slug": flow, "step_slug": f"m{i}", "step_type": "map"}
        if previous:
            args["deps_slugs"] = [previous]
        calls.append(("add_step", args))
        previous = f"m{i}"
    return calls


def started_list_task(flow: str) -> Calls:
    """Start a run of a ``map_chain(after_single=True)`` flow and claim its "list" task."""
    return [
        ("start_flow", {"flow_slug": flow, "input": {}, "run_id": RUN}),
        ("start_tasks", {"flow_slug": flow, "msg_ids": [1], "worker_id": None}),
    ]


BAD_CALLS = [
    # -- create_flow ---------------------------------------------------------------------------
    *(
        BadCall(
            f"flow_slug_{name}",
            "create_flow",
            {"flow_slug": slug},
            "23514",
            check("flows", "slug_is_valid"),
        )
        for name, slug in [
            ("empty", ""),
            ("digit_first", "1flow"),
            ("dash", "my-flow"),
            ("dollar", "a$b"),
            ("reserved", "run"),
            ("too_long", "f" * 129),
        ]
    ),
    BadCall(
        "flow_slug_null",
        "create_flow",
        {"flow_slug": None},
        "23502",
        not_null("flows", "flow_slug"),
    ),
    BadCall(
        "flow_slug_longer_than_a_queue_name",
        "create_flow",
        {"flow_slug": "f" * 48},
        "P0001",
        "queue name is too long, maximum length is 47 characters",
    ),
    *(
        BadCall(
            f"flow_{option}",
            "create_flow",
            {"flow_slug": "neg", option: value},
            "23514",
            check("flows", constraint),
        )
        for option, value, constraint in [
            ("max_attempts", -1, "opt_max_attempts_is_nonnegative"),
            ("base_delay", -1, "opt_base_delay_is_nonnegative"),
            ("timeout", 0, "opt_timeout_is_positive"),
        ]
    ),
    *(
        BadCall(
            f"flow_{option}_null",
            "create_flow",
            {"flow_slug": "nulls", option: None},
            "23502",
            not_null("flows", f"opt_{option}"),
        )
        for option in ["max_attempts", "base_delay", "timeout"]
    ),
    BadCall(
        "flow_options_checked_in_constraint_name_order",
        "create_flow",
        {"flow_slug": "neg", "max_attempts": -1, "base_delay": -1, "timeout": 0},
        "23514",
        check("flows", "opt_base_delay_is_nonnegative"),
    ),
    BadCall(
        "flow_option_checked_before_the_slug",
        "create_flow",
        {"flow_slug": "my-flow", "max_attempts": -1},
        "23514",
        check("flows", "opt_max_attempts_is_nonnegative"),
    ),
    BadCall(
        "flow_option_checked_before_the_queue_name",
        "create_flow",
        {"flow_slug": "f" * 48, "timeout": 0},
        "23514",
        check("flows", "opt_timeout_is_positive"),
    ),
    BadCall(
        "existing_flow_with_a_bad_option",
        "create_flow",
        {"flow_slug": "base", "timeout": 0},
        "23514",
        check("flows", "opt_timeout_is_positive"),
        setup=BASE_FLOW,
    ),
    # -- add_step ------------------------------------------------------------------------------
    *(
        BadCall(
            f"step_{option}",
            "add_step",
            {"flow_slug": "base", "step_slug": "c", option: value},
            "23514",
            check("steps", constraint),
            setup=BASE_FLOW,
        )
        for option, value, constraint in [
            ("max_attempts", -1, "opt_max_attempts_is_nonnegative"),
            ("base_delay", -2, "opt_base_delay_is_nonnegative"),
            ("timeout", 0, "opt_timeout_is_positive"),
            ("start_delay", -1, "opt_start_delay_is_nonnegative"),
        ]
    ),
    BadCall(
        "step_options_checked_in_constraint_name_order",
        "add_step",
        {
            "flow_slug": "base",
            "step_slug": "c",
            "max_attempts": -1,
            "timeout": 0,
            "start_delay": -1,
            "base_delay": -1,
        },
        "23514",
        check("steps", "opt_base_delay_is_nonnegative"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "existing_step_with_a_bad_option",
        "add_step",
        {"flow_slug": "base", "step_slug": "a", "timeout": 0},
        "23514",
        check("steps", "opt_timeout_is_positive"),
        setup=BASE_FLOW,
    ),
    *(
        BadCall(
            f"step_slug_{name}",
            "add_step",
            {"flow_slug": "base", "step_slug": slug},
            "23514",
            check("steps", "steps_step_slug_check"),
            setup=BASE_FLOW,
        )
        for name, slug in [("space", "bad slug"), ("reserved", "run"), ("too_long", "s" * 129)]
    ),
    BadCall(
        "step_slug_null",
        "add_step",
        {"flow_slug": "base", "step_slug": None},
        "23502",
        not_null("steps", "step_slug"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "step_flow_slug_null",
        "add_step",
        {"flow_slug": None, "step_slug": "c"},
        "23502",
        not_null("steps", "flow_slug"),
    ),
    BadCall(
        "step_type_unknown",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "step_type": "fanout"},
        "23514",
        check("steps", "steps_step_type_check"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "step_of_unknown_flow",
        "add_step",
        {"flow_slug": "nowhere", "step_slug": "c", "deps_slugs": ["x"]},
        "23503",
        foreign_key("steps", "steps_flow_slug_fkey"),
    ),
    BadCall(
        "step_slug_checked_before_the_flow",
        "add_step",
        {"flow_slug": "nowhere", "step_slug": "bad slug"},
        "23514",
        check("steps", "steps_step_slug_check"),
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
        "map_with_two_deps_checked_first",
        "add_step",
        {"flow_slug": None, "step_slug": "m m", "deps_slugs": ["a", None], "step_type": "map"},
        "P0001",
        'Map step "m m" can have at most one dependency, but 2 were provided: a',
    ),
    BadCall(
        "missing_dependency",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["a", "nope"]},
        "23503",
        foreign_key("deps", "deps_flow_slug_dep_slug_fkey"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "self_dependency",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["c"]},
        "23514",
        check("deps", "deps_check"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "self_dependency_checked_before_a_missing_one",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["nope", "c"]},
        "23514",
        check("deps", "deps_check"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "existing_step_depending_on_itself",
        "add_step",
        {"flow_slug": "base", "step_slug": "a", "deps_slugs": ["a"]},
        "23514",
        check("deps", "deps_check"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "null_dependency",
        "add_step",
        {"flow_slug": "base", "step_slug": "c", "deps_slugs": ["a", None]},
        "23502",
        not_null("deps", "dep_slug"),
        setup=BASE_FLOW,
    ),
    # -- start_flow, start_flow_with_states ------------------------------------------------------
    *(
        BadCall(
            f"{function}_of_unknown_flow",
            function,
            {"flow_slug": "nowhere", "input": {}},
            "23503",
            foreign_key("runs", "runs_flow_slug_fkey"),
        )
        for function in ["start_flow", "start_flow_with_states"]
    ),
    BadCall(
        "start_null_flow_slug",
        "start_flow",
        {"flow_slug": None, "input": {}},
        "23502",
        not_null("runs", "flow_slug"),
    ),
    BadCall(
        "null_input",
        "start_flow",
        {"flow_slug": "base", "input": None},
        "23502",
        not_null("runs", "input"),
        setup=BASE_FLOW,
    ),
    BadCall(
        "null_input_checked_before_the_flow",
        "start_flow",
        {"flow_slug": "nowhere", "input": None},
        "23502",
        not_null("runs", "input"),
    ),
    BadCall(
        "run_id_taken",
        "start_flow",
        {"flow_slug": "base", "input": {}, "run_id": RUN},
        "23505",
        'duplicate key value violates unique constraint "runs_pkey"',
        setup=BASE_RUN,
    ),
    *(
        BadCall(
            f"{function}_root_map_object_input",
            function,
            {"flow_slug": "mapped", "input": {"not": "array"}},
            "P0001",
            "Flow mapped has root map steps but input is not an array (got object)",
            setup=ROOT_MAP_FLOW,
        )
        for function in ["start_flow", "start_flow_with_states"]
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
        "cascade_of_50_taskless_steps_at_start",
        "start_flow",
        {"flow_slug": "deep", "input": []},
        "P0001",
        CASCADE_LIMIT,
        setup=map_chain("deep", 50),
    ),
    # -- start_tasks, complete_task --------------------------------------------------------------
    BadCall(
        "claim_by_unknown_worker",
        "start_tasks",
        {"flow_slug": "base", "msg_ids": [1], "worker_id": UNKNOWN_WORKER},
        "23503",
        foreign_key("step_tasks", "step_tasks_last_worker_id_fkey"),
        setup=BASE_RUN,
    ),
    BadCall(
        "cascade_of_50_taskless_steps_on_completion",
        "complete_task",
        {"run_id": RUN, "step_slug": "list", "task_index": 0, "output": []},
        "P0001",
        CASCADE_LIMIT,
        setup=[*map_chain("deep", 50, after_single=True), *started_list_task("deep")],
    ),
    # -- set_vt_batch, calculate_retry_delay -----------------------------------------------------
    *(
        BadCall(
            f"set_vt_batch_unknown_queue_{name}",
            "set_vt_batch",
            {"queue_name": "nope", "msg_ids": ids, "vt_offsets": offsets},
            "42P01",
            'relation "pgmq.q_nope" does not exist',
        )
        for name, ids, offsets in [("one", [1], [5]), ("empty", [], [])]
    ),
    BadCall(
        "set_vt_batch_queue_name_checked_first",
        "set_vt_batch",
        {"queue_name": "a$b", "msg_ids": None, "vt_offsets": None},
        "P0001",
        "queue name contains invalid characters: $, ;, --, or \\'",
    ),
    *(
        BadCall(
            f"set_vt_batch_lengths_{name}",
            "set_vt_batch",
            {"queue_name": "base", "msg_ids": ids, "vt_offsets": offsets},
            "P0001",
            f"msg_ids length ({shown[0]}) must equal vt_offsets length ({shown[1]})",
            setup=BASE_FLOW,
        )
        for name, ids, offsets, shown in [
            ("differ", [1, 2], [5], ("2", "1")),
            ("no_ids", [], [5], ("<NULL>", "1")),
            ("no_offsets", [1], [], ("1", "<NULL>")),
        ]
    ),
    BadCall(
        "set_vt_batch_null_offset",
        "set_vt_batch",
        {"queue_name": "base", "msg_ids": [1, 2], "vt_offsets": [5, None]},
        "23502",
        not_null("q_base", "vt"),
        setup=BASE_RUN,
    ),
    BadCall(
        "retry_delay_out_of_range",
        "calculate_retry_delay",
        {"base_delay": 10**9, "attempts_count": 5},
        "22003",
        "integer out of range",
    ),
]


def prepare(db: Db, bad: BadCall) -> dict[str, Any]:
    """Run the case's setup; return the row counts the failing call must leave unchanged."""
    for function, args in bad.setup:
        db.call(function, **args)
    (counts,) = db.execute("sqlcore_row_counts")
    return counts
