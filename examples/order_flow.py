"""Order processing: typed steps, a fan-out over the order's items, and a join.

    validate ──┬── charge ─────────────┐
               └── reserve ── pack[*] ─┴── notify

Run: ``python -m examples.order_flow`` (or serve it with
``pgflow-kombu worker -A examples.order_flow:app`` and start runs with
``pgflow-kombu runs start process_order '{"order_id": 1, "items": [...], "email": "..."}'``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from examples.common import running_worker, show
from pgflow_kombu import PgFlow

app = PgFlow()
order = app.flow("process_order", max_attempts=3, timeout=30)


class Item(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    price_cents: int = Field(ge=0)


class Order(BaseModel):
    order_id: int
    email: str
    items: list[Item]


class Receipt(BaseModel):
    order_id: int
    total_cents: int


@order.step
def validate(run: Order) -> Order:
    if not run.items:
        raise ValueError(f"order {run.order_id} has no items")
    return run


@order.step
def charge(validate: Order) -> Receipt:
    total = sum(i.quantity * i.price_cents for i in validate.items)
    return Receipt(order_id=validate.order_id, total_cents=total)


@order.step
def reserve(validate: Order) -> list[Item]:
    return validate.items


@order.map(over="reserve")
def pack(item: Item) -> str:
    return f"{item.quantity} x {item.sku}"


@order.step(depends_on=["charge", "pack", "validate"])
def notify(charge: Receipt, pack: list[str], validate: Order) -> dict[str, object]:
    return {"to": validate.email, "total_cents": charge.total_cents, "parcel": pack}


def main() -> None:
    with running_worker(app):
        handle = order.start(
            Order(
                order_id=1001,
                email="ada@example.com",
                items=[
                    Item(sku="book", quantity=2, price_cents=1250),
                    Item(sku="lamp", quantity=1, price_cents=3999),
                ],
            )
        )
        run = handle.wait(timeout=30)
        show("output", run.output)
        for state in run.step_states:
            print(f"  {state.step_slug:<8} {state.status:<10} tasks={len(state.tasks)}")


if __name__ == "__main__":
    main()
