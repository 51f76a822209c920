from pgflow_kombu import PgFlow

app = PgFlow()
order = app.flow("process_order", max_attempts=3, timeout=30)  # defaults for every step


@order.step
def validate(run: dict) -> dict:  # `run` is the flow input: a root step
    if not run["items"]:
        raise ValueError("no items")
    return run


@order.step
def prices(validate: dict) -> list[str]:  # depends on `validate`, named by the parameter
    return validate["items"]


@order.map(over="prices")  # one task per element of prices' output
def ship(item: str) -> str:
    return f"shipped {item}"


@order.step(depends_on=["ship", "validate"], max_attempts=1)  # explicit dependencies
def notify(ship: list[str], validate: dict) -> dict:  # a map step's output: the list, in order
    return {"order": validate["order_id"], "shipped": ship}


assert [s.slug for s in order.steps] == ["validate", "prices", "ship", "notify"]

app.start_worker()
try:
    run = order.start({"order_id": 1, "items": ["a", "b"]}).wait(timeout=30)
    # The run output holds the leaf steps' outputs (steps nothing depends on).
    assert run.output == {"notify": {"order": 1, "shipped": ["shipped a", "shipped b"]}}
    assert {s.step_slug: s.status for s in run.step_states}["ship"] == "completed"
finally:
    app.close()
