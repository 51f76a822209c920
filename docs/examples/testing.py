from pgflow_kombu import PgFlow
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
    if double < 0:
        raise ValueError("negative")
    return double + 1


handle = flow.start({"x": 20})  # already finished
assert handle.status == "completed"
assert handle.output == {"plus_one": 41}

# run_eager runs a flow of any app in-process and returns the run output; a failure raises
# StepFailed naming the step, with the handler's exception as its __cause__.
assert flow.run_eager({"x": 1}) == {"plus_one": 3}
try:
    flow.run_eager({"x": -1}, retries=True)  # retries=True: each task gets max_attempts tries
    raise AssertionError("not reached")
except StepFailed as exc:
    assert isinstance(exc.__cause__, ValueError)
    assert (exc.step_slug, exc.attempts) == ("plus_one", 2)
