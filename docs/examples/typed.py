from pydantic import BaseModel, Field

from pgflow_kombu import PgFlow

app = PgFlow()
signup = app.flow("typed_signup")


class User(BaseModel):
    email: str
    age: int = Field(ge=0)


class Account(BaseModel):
    user: User
    plan: str = "free"


@signup.step
def validate(run: User) -> User:  # the run input is validated into a User
    return run


@signup.step
def create(validate: User) -> Account:  # a dependency's JSON output becomes a User again
    return Account(user=validate)  # models are stored as JSON (model_dump(mode="json"))


app.start_worker()
try:
    ok = signup.start({"email": "a@b.c", "age": 30}).wait(timeout=30)
    assert ok.output == {"create": {"user": {"email": "a@b.c", "age": 30}, "plan": "free"}}

    # Input that does not fit fails the task at once (no retry: it would not fit the next time
    # either), with an error naming the step and the field.
    bad = signup.start({"email": "a@b.c", "age": -1}).wait(timeout=30, raise_on_failure=False)
    assert bad.status == "failed"
    (step,) = [s for s in bad.step_states if s.step_slug == "validate"]
    assert "age" in step.error_message
    assert step.tasks[0].attempts_count == 1  # of the default max_attempts=3
finally:
    app.close()
