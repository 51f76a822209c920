from datetime import datetime, timedelta, timezone

from pgflow_kombu import PgFlow
from pgflow_kombu.observability import RunCompleted, TaskSucceeded

app = PgFlow()
finished: list[str] = []


@app.task
def resize(image: str) -> str:
    return image.upper()


@app.hooks.on_task_succeeded  # or app.hooks.on("task_succeeded", fn)
def count(event: TaskSucceeded) -> None:  # called on the worker's threads: keep it fast
    finished.append(f"{event.flow_slug}/{event.step_slug}[{event.task_index}]")


@app.hooks.on_run_completed
def done(event: RunCompleted) -> None:
    finished.append(f"run {event.flow_slug}")


app.start_worker()
try:
    handle = resize.delay(image="cat.png")
    events = [(e.event_type, e.step_slug) for e in handle.events(timeout=30)]  # ends with the run
    assert events == [
        ("run:started", None),
        ("step:started", "resize"),
        ("step:completed", "resize"),
        ("run:completed", None),
    ]

    page = app.find_runs(
        flow_slug="resize",
        status="completed",
        since=datetime.now(timezone.utc) - timedelta(days=1),
        input_contains={"image": "cat.png"},
        limit=50,
    )
    assert [r.run_id for r in page.runs] == [handle.run_id] and page.next is None
    assert app.count_runs(flow_slug="resize")["completed"] == 1
finally:
    app.close()  # stops the worker: its hooks have run
assert finished == ["resize/resize[0]", "run resize"]  # fired once the outcome was committed
