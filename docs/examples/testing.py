from pgflow_kombu import ConfigurationError, PgFlow
from pgflow_kombu.errors import StepFailed

app = PgFlow(eager=True)  # no worker, no database: started runs finish in the calling process
flow = app.flow("eager_demo", max_attempts=2)
calls: list[int] = []


@flow.step
def double(run: dict) -> int:
    return run["x"] * 2


@flow.step
def plus_one(double: int) -> int:
    calls.append(double)
    if len(calls) == 1:
        raise ConnectionError("flaky on the first attempt")
    return double + 1


handle = flow.start({"x": 20})  # already finished; retried as a worker would (no backoff)
assert handle.status == "completed"
assert handle.output == {"plus_one": 41} and calls == [40, 40]


@app.task
def send(to: str) -> str:
    return f"sent to {to}"


assert send.delay(to="a@b.c").get() == "sent to a@b.c"
try:
    send.apply_async(kwargs={"to": "a@b.c"}, countdown=60)  # a delay cannot be honoured eagerly
    raise AssertionError("not reached")
except ConfigurationError:
    pass

# run_eager runs a flow of any app in-process and returns the run output; a failure raises
# StepFailed naming the step, with the handler's exception as its __cause__.
calls.clear()
try:
    flow.run_eager({"x": -1})  # without retries=True, the first failure raises
    raise AssertionError("not reached")
except StepFailed as exc:
    assert isinstance(exc.__cause__, ConnectionError)
    assert (exc.step_slug, exc.attempts) == ("plus_one", 1)
assert flow.run_eager({"x": 1}, retries=True) == {"plus_one": 3}
