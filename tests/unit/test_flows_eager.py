"""Input assembly as pgflow does it, and eager (in-process) execution of whole flows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from pgflow_kombu.errors import FlowInputError, NotBoundError, StepFailed, StepOutputError
from pgflow_kombu.flows import (
    Flow,
    StepContext,
    aggregate_map_output,
    run_output,
    single_task_input,
    task_inputs,
)


class OrderIn(BaseModel):
    order_id: int
    items: list[str]


class Validated(BaseModel):
    order_id: int
    count: int


class Shipment(BaseModel):
    item: str
    box: int


def order_flow(calls: list[str] | None = None) -> Flow:
    log = calls if calls is not None else []
    order = Flow("process_order", max_attempts=3)

    @order.step
    def validate(run: OrderIn) -> Validated:
        log.append("validate")
        return Validated(order_id=run.order_id, count=len(run.items))

    @order.step
    def charge(validate: Validated, run: OrderIn) -> list[str]:
        log.append("charge")
        return run.items

    @order.map(over="charge")
    async def ship(item: str, ctx: StepContext) -> Shipment:
        log.append(f"ship{ctx.task_index}")
        await asyncio.sleep(0)
        return Shipment(item=item, box=ctx.task_index)

    @order.step(depends_on=["ship", "validate"])
    def notify(ship: list[Shipment], validate: Validated) -> str:
        log.append("notify")
        return f"{validate.order_id}:{','.join(s.item for s in ship)}"

    @order.step
    def audit(validate: Validated) -> int:
        log.append("audit")
        return validate.count

    return order


# -- assembly ------------------------------------------------------------------------------------


def test_single_step_input_has_run_and_dependency_outputs() -> None:
    flow = order_flow()
    outputs: dict[str, Any] = {"validate": {"order_id": 1, "count": 2}, "ship": [{"a": 1}]}
    assert single_task_input(flow.get_step("notify"), {"x": 1}, outputs) == {
        "run": {"x": 1},
        "ship": [{"a": 1}],
        "validate": {"order_id": 1, "count": 2},
    }
    assert task_inputs(flow, "validate", {"x": 1}, {}) == [{"run": {"x": 1}}]


def test_map_inputs_are_the_elements() -> None:
    flow = order_flow()
    assert task_inputs(flow, "ship", None, {"charge": ["a", "b"]}) == ["a", "b"]
    assert task_inputs(flow, "ship", None, {"charge": []}) == []


def test_dependent_map_over_non_array_is_a_type_violation_of_the_producer() -> None:
    flow = order_flow()
    with pytest.raises(StepOutputError) as info:
        task_inputs(flow, "ship", None, {"charge": {"not": "array"}})
    assert str(info.value) == (
        "[TYPE_VIOLATION] Map step ship expects array input but dependency charge produced object"
    )
    assert info.value.step_slug == "charge"


def test_root_map_needs_an_array_input() -> None:
    flow = Flow("squares")

    @flow.map
    def square(x: int) -> int:
        return x * x

    assert task_inputs(flow, "square", [1, 2], {}) == [1, 2]
    with pytest.raises(FlowInputError) as info:
        task_inputs(flow, "square", {"a": 1}, {})
    assert str(info.value) == (
        "Flow squares has root map steps but input is not an array (got object)"
    )
    with pytest.raises(FlowInputError, match="Flow squares has root map steps but input is NULL"):
        flow.run_eager(None)


def test_map_outputs_aggregate_in_task_index_order() -> None:
    assert aggregate_map_output({2: "c", 0: "a", 1: "b"}) == ["a", "b", "c"]
    assert aggregate_map_output({}) == []


def test_run_output_is_keyed_by_leaves() -> None:
    flow = order_flow()
    outputs: dict[str, Any] = {"validate": 1, "charge": 2, "ship": [], "notify": "n", "audit": 5}
    assert run_output(flow, outputs) == {"notify": "n", "audit": 5}
    assert run_output(Flow("empty"), {}) is None


# -- eager ---------------------------------------------------------------------------------------


def test_eager_run_of_the_design_example() -> None:
    calls: list[str] = []
    flow = order_flow(calls)
    out = flow.run_eager(OrderIn(order_id=7, items=["x", "y"]))
    assert out == {"notify": "7:x,y", "audit": 2}
    assert calls == ["validate", "charge", "ship0", "ship1", "notify", "audit"]


def test_eager_map_over_empty_array_outputs_empty_list_without_calls() -> None:
    calls: list[str] = []
    flow = order_flow(calls)
    assert flow.run_eager({"order_id": 1, "items": []}) == {"notify": "1:", "audit": 0}
    assert "ship0" not in calls


def test_eager_map_leaf_gives_its_array() -> None:
    flow = Flow("f")

    @flow.map
    def double(x: int) -> int:
        return 2 * x

    assert flow.run_eager([1, 2, 3]) == {"double": [2, 4, 6]}
    assert flow.run_eager([]) == {"double": []}


def test_eager_empty_flow_outputs_none() -> None:
    assert Flow("empty").run_eager({"a": 1}) is None


def test_eager_failure_names_step_and_keeps_cause() -> None:
    flow = Flow("f")

    @flow.map
    def boom(x: int) -> int:
        if x == 2:
            raise ValueError("no twos")
        return x

    with pytest.raises(StepFailed) as info:
        flow.run_eager([1, 2])
    err = info.value
    assert str(err) == "flow 'f' step 'boom' task 1 failed after 1 attempt: ValueError: no twos"
    assert (err.step_slug, err.task_index, err.attempts) == ("boom", 1, 1)
    assert isinstance(err.__cause__, ValueError)


def test_eager_retries_up_to_max_attempts() -> None:
    flow = Flow("f", max_attempts=4)
    attempts: list[int] = []

    @flow.step
    def flaky(run: int, ctx: StepContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("try again")
        return run

    assert flow.run_eager(5, retries=True) == {"flaky": 5}
    assert attempts == [1, 2, 3]

    attempts.clear()
    with pytest.raises(StepFailed, match="failed after 1 attempt:"):
        flow.run_eager(5)
    assert attempts == [1]


def test_eager_retries_exhausted() -> None:
    flow = Flow("f")

    @flow.step(max_attempts=2)
    def always(run: int) -> int:
        raise RuntimeError("down")

    with pytest.raises(StepFailed) as info:
        flow.run_eager(1, retries=True)
    assert str(info.value) == "flow 'f' step 'always' failed after 2 attempts: RuntimeError: down"


def test_eager_type_violation_for_map_over_non_array() -> None:
    flow = Flow("f")

    @flow.step
    def produce(run: Any) -> Any:
        return run

    @flow.map(over="produce")
    def each(x: Any) -> Any:
        return x

    with pytest.raises(StepOutputError, match=r"\[TYPE_VIOLATION\] .* produced string"):
        flow.run_eager("text")
    with pytest.raises(StepOutputError, match=r"produced null"):
        flow.run_eager(None)


def test_eager_outputs_pass_through_json_so_handlers_cannot_share_state() -> None:
    flow = Flow("f")

    @flow.step
    def source(run: Any) -> dict[str, list[int]]:
        return {"values": [1]}

    @flow.step
    def mutate(source: dict[str, list[int]]) -> int:
        source["values"].append(2)
        return len(source["values"])

    @flow.step(depends_on=["source", "mutate"])
    def read(source: dict[str, list[int]]) -> int:
        return len(source["values"])

    assert flow.run_eager(None) == {"read": 1}


def test_eager_input_must_be_json() -> None:
    flow = Flow("f")
    flow.add_step("a", lambda run: run)
    with pytest.raises(FlowInputError, match="flow 'f': the run input is not JSON"):
        flow.run_eager({"x": object()})


def test_arun_eager_inside_a_running_loop() -> None:
    flow = order_flow()

    async def main() -> Any:
        return await flow.arun_eager({"order_id": 2, "items": ["a"]})

    assert asyncio.run(main()) == {"notify": "2:a", "audit": 1}


def test_sync_eager_with_async_handler_inside_running_loop_points_to_arun() -> None:
    flow = order_flow()

    async def main() -> None:
        flow.run_eager({"order_id": 2, "items": ["a"]})

    with pytest.raises(Exception, match=r"use 'await flow.arun_eager"):
        asyncio.run(main())


def test_start_without_an_app_is_a_clear_error() -> None:
    with pytest.raises(NotBoundError, match="flow 'process_order' is not registered with an app"):
        order_flow().start({"order_id": 1, "items": []})
