"""Flow definitions: pure data and code, no database.

A :class:`Flow` is a DAG of steps built with decorators; a :class:`Task` is a function that is a
one-step flow; :func:`chain` and the ``>>`` operator build flows from tasks. Every definition is
checked when it is built, can be described as plain data (:meth:`Flow.shape`) to create or verify
it in the pgflow schema, and can run in-process (:meth:`Flow.run_eager`) for tests. Starting runs
in a database goes through a :class:`Dispatcher` that the app binds.
"""

from __future__ import annotations

from pgflow_kombu.flows.binding import RUN_KEY, Binder
from pgflow_kombu.flows.chain import Chain, ChainItem, Group, Signature, chain, each
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.dispatch import Dispatcher
from pgflow_kombu.flows.eager import arun_eager, run_eager
from pgflow_kombu.flows.flow import Flow, define_flow
from pgflow_kombu.flows.handler import Handler
from pgflow_kombu.flows.inputs import (
    aggregate_map_output,
    check_root_map_input,
    run_output,
    single_task_input,
    task_inputs,
)
from pgflow_kombu.flows.jsondata import Json, NotJsonError, json_type_name, to_json
from pgflow_kombu.flows.options import CREATE_FLOW_DEFAULTS, FlowOptions, StepOptions
from pgflow_kombu.flows.schedules import ScheduleSpec
from pgflow_kombu.flows.shapes import (
    FlowShape,
    ShapeDifference,
    StepShape,
    add_step_arguments,
    compare_shapes,
    create_flow_arguments,
)
from pgflow_kombu.flows.slugs import (
    MAX_FLOW_SLUG_LENGTH,
    MAX_SLUG_LENGTH,
    is_valid_flow_slug,
    is_valid_slug,
    slug_from_name,
    validate_flow_slug,
    validate_step_slug,
)
from pgflow_kombu.flows.step import PreparedCall, Step, StepType
from pgflow_kombu.flows.task import Task, task

__all__ = [
    "CREATE_FLOW_DEFAULTS",
    "MAX_FLOW_SLUG_LENGTH",
    "MAX_SLUG_LENGTH",
    "RUN_KEY",
    "Binder",
    "Chain",
    "ChainItem",
    "Dispatcher",
    "Flow",
    "FlowOptions",
    "FlowShape",
    "Group",
    "Handler",
    "Json",
    "NotJsonError",
    "PreparedCall",
    "ScheduleSpec",
    "ShapeDifference",
    "Signature",
    "Step",
    "StepContext",
    "StepOptions",
    "StepShape",
    "StepType",
    "Task",
    "add_step_arguments",
    "aggregate_map_output",
    "arun_eager",
    "chain",
    "check_root_map_input",
    "compare_shapes",
    "create_flow_arguments",
    "define_flow",
    "each",
    "is_valid_flow_slug",
    "is_valid_slug",
    "json_type_name",
    "run_eager",
    "run_output",
    "single_task_input",
    "slug_from_name",
    "task",
    "task_inputs",
    "to_json",
    "validate_flow_slug",
    "validate_step_slug",
]
