"""Handler calls: binding pgflow task inputs to parameters, type validation in and out, JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from pgflow_kombu.errors import PgFlowError, StepInputError, StepOutputError
from pgflow_kombu.flows import Flow, StepContext, to_json
from pgflow_kombu.flows.jsondata import NotJsonError


class OrderIn(BaseModel):
    order_id: int
    email: str


class Item(BaseModel):
    sku: str
    price: float


class Basket(BaseModel):
    items: list[Item]


@dataclasses.dataclass
class Point:
    x: int
    y: int


def make_flow() -> Flow:
    flow = Flow("orders")

    @flow.step
    def validate(run: OrderIn) -> OrderIn:
        return run

    @flow.step
    def charge(validate: OrderIn, run: OrderIn) -> list[Item]:
        return [Item(sku=f"{validate.order_id}-a", price=1.5)]

    @flow.map(over="charge")
    def ship(item: Item) -> Point:
        return Point(x=len(item.sku), y=int(item.price))

    return flow


def test_single_step_gets_run_and_dependency_outputs_validated_into_models() -> None:
    flow = make_flow()
    step = flow.get_step("charge")
    call = step.prepare(
        {"run": {"order_id": 7, "email": "a@b.c"}, "validate": {"order_id": 7, "email": "a@b.c"}}
    )
    assert call.args == (OrderIn(order_id=7, email="a@b.c"), OrderIn(order_id=7, email="a@b.c"))
    assert step.finish(call()) == [{"sku": "7-a", "price": 1.5}]


def test_execute_runs_prepare_call_finish() -> None:
    flow = make_flow()
    assert flow.get_step("ship").execute({"sku": "abc", "price": 2}) == {"x": 3, "y": 2}
    assert flow.get_step("validate").execute({"run": {"order_id": "5", "email": "e"}}) == {
        "order_id": 5,
        "email": "e",
    }


def test_bad_input_names_flow_step_and_field() -> None:
    flow = make_flow()
    with pytest.raises(StepInputError) as info:
        flow.get_step("validate").prepare({"run": {"order_id": "x", "email": "e"}})
    err = info.value
    assert err.flow_slug == "orders" and err.step_slug == "validate"
    assert err.field == "run.order_id"
    assert str(err).startswith("flow 'orders' step 'validate': invalid input run.order_id: ")
    assert "valid integer" in str(err)


def test_bad_nested_map_element() -> None:
    flow = make_flow()
    with pytest.raises(StepInputError) as info:
        flow.get_step("ship").prepare({"sku": "a"})
    assert info.value.field == "item.price"
    assert "Field required" in str(info.value)


def test_missing_dependency_key_in_input() -> None:
    flow = make_flow()
    with pytest.raises(StepInputError) as info:
        flow.get_step("charge").prepare({"run": {"order_id": 1, "email": "e"}})
    assert str(info.value) == (
        "flow 'orders' step 'charge': input has no key 'validate' (the output of step "
        "'validate') for parameter 'validate'"
    )
    assert info.value.field == "validate"


def test_single_step_input_must_be_an_object() -> None:
    flow = make_flow()
    with pytest.raises(StepInputError, match="a single step's input must be a JSON object"):
        flow.get_step("validate").prepare([1, 2])


def test_output_not_matching_return_type() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: Any) -> list[Item]:
        return run  # type: ignore[no-any-return]

    step = flow.get_step("a")
    with pytest.raises(StepOutputError) as info:
        step.execute({"run": [{"sku": "a", "price": "cheap"}]})
    assert info.value.field == "0.price"
    assert str(info.value).startswith(
        "flow 'f' step 'a': output does not match the return type list[Item]: 0.price:"
    )


def test_output_that_is_not_json() -> None:
    flow = Flow("f")

    @flow.step
    def untyped(run):  # type: ignore[no-untyped-def]
        return {"when": datetime.date(2024, 1, 2), "bad": object()}

    @flow.step
    def nan(run: Any) -> float:
        return float("nan")

    with pytest.raises(StepOutputError, match="flow 'f' step 'untyped': output is not JSON"):
        flow.get_step("untyped").execute({"run": None})
    with pytest.raises(StepOutputError, match="nan is not a JSON number") as info:
        flow.get_step("nan").execute({"run": None})
    assert info.value.field == "$"


def test_typed_dict_output_with_unserialisable_value() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: Any) -> dict[str, Any]:
        return {"x": object()}

    with pytest.raises(StepOutputError, match="output is not JSON"):
        flow.get_step("a").execute({"run": None})


def test_json_conversion_of_common_values() -> None:
    u = uuid.UUID(int=1)
    assert to_json(
        {"m": Item(sku="a", price=1), "d": Point(1, 2), "t": (1, 2), "u": u, "n": None}
    ) == {
        "m": {"sku": "a", "price": 1.0},
        "d": {"x": 1, "y": 2},
        "t": [1, 2],
        "u": str(u),
        "n": None,
    }
    with pytest.raises(NotJsonError) as info:
        to_json({"a": [1, float("inf")]})
    assert info.value.path == "$.a[1]"


def test_untyped_parameters_and_outputs_pass_json_through() -> None:
    flow = Flow("f")

    @flow.step
    def a(run):  # type: ignore[no-untyped-def]
        return {"got": run, "model": Item(sku="z", price=2)}

    assert flow.get_step("a").execute({"run": [1, "x"]}) == {
        "got": [1, "x"],
        "model": {"sku": "z", "price": 2.0},
    }


def test_none_return_type() -> None:
    flow = Flow("f")

    @flow.step
    def ok(run: Any) -> None:
        return None

    @flow.step
    def lies(run: Any) -> None:
        return 5  # type: ignore[return-value]

    assert flow.get_step("ok").execute({"run": 1}) is None
    with pytest.raises(StepOutputError):
        flow.get_step("lies").execute({"run": 1})


def test_kwargs_parameter_receives_the_other_keys() -> None:
    flow = Flow("f")
    flow.add_step("a")
    flow.add_step("b")

    @flow.step(depends_on=["a", "b"])
    def c(a: int, **others: int) -> dict[str, int]:
        return {"a": a, **others}

    assert flow.get_step("c").execute({"run": 0, "a": 1, "b": 2}) == {"a": 1, "run": 0, "b": 2}
    with pytest.raises(StepInputError) as info:
        flow.get_step("c").execute({"run": 0, "a": 1, "b": "two"})
    assert info.value.field == "b"


def test_positional_only_parameters() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: int, /) -> int:
        return run + 1

    assert flow.get_step("a").execute({"run": 1}) == 2


def test_context_is_passed_by_annotation() -> None:
    flow = Flow("f")
    seen: list[StepContext] = []

    @flow.map
    def m(x: int, ctx: StepContext) -> int:
        seen.append(ctx)
        return x

    step = flow.get_step("m")
    ctx = StepContext(flow_slug="f", step_slug="m", run_id="r1", task_index=3, attempt=2)
    assert step.execute(4, ctx) == 4
    assert seen[-1] is ctx
    step.execute(5)  # without a context the handler still gets one
    assert seen[-1].step_slug == "m" and seen[-1].run_id is None


def test_async_handler_sync_and_async_execution() -> None:
    flow = Flow("f")

    @flow.step
    async def a(run: int) -> int:
        await asyncio.sleep(0)
        return run * 2

    step = flow.get_step("a")
    assert step.is_async
    assert step.execute({"run": 2}) == 4
    assert asyncio.run(step.aexecute({"run": 3})) == 6

    async def inside_loop() -> None:
        with pytest.raises(PgFlowError, match=r"use 'await step.aexecute"):
            step.execute({"run": 1})

    asyncio.run(inside_loop())


def test_prepared_call_of_async_handler_returns_a_coroutine() -> None:
    flow = Flow("f")

    @flow.step
    async def a(run: int) -> int:
        return run

    call = flow.get_step("a").prepare({"run": 9})
    assert call.is_async
    assert asyncio.run(call()) == 9


def test_list_of_models_parameter() -> None:
    flow = Flow("f")

    @flow.step
    def total(run: Basket) -> float:
        return sum(i.price for i in run.items)

    assert flow.get_step("total").execute({"run": {"items": [{"sku": "a", "price": 2}]}}) == 2.0
    with pytest.raises(StepInputError) as info:
        flow.get_step("total").execute({"run": {"items": [{"sku": "a"}]}})
    assert info.value.field == "run.items.0.price"


def test_forward_reference_resolved_on_first_use() -> None:
    flow = Flow("f")

    @flow.step
    def a(run: LaterModel) -> LaterModel:
        return run

    assert flow.get_step("a").execute({"run": {"v": 1}}) == {"v": 1}


class LaterModel(BaseModel):
    v: int


def test_async_detection_sees_through_wrappers_and_callable_objects() -> None:
    import functools

    async def inner(run: int) -> int:
        return run + 1

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return inner(*args, **kwargs)

    class Callable:
        async def __call__(self, run: int) -> int:
            return run + 2

    flow = Flow("f")
    flow.add_step("wrapped", wrapper)
    flow.add_step("obj", Callable())
    assert flow.get_step("wrapped").is_async and flow.get_step("obj").is_async
    assert flow.run_eager(1) == {"wrapped": 2, "obj": 3}


def test_finishing_an_unawaited_coroutine_is_a_clear_error() -> None:
    flow = Flow("f")

    @flow.step
    async def a(run: int) -> int:
        return run

    step = flow.get_step("a")
    with pytest.raises(StepOutputError, match="the handler returned an awaitable"):
        step.finish(step.prepare({"run": 1})())
