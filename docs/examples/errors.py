from pgflow_kombu import FlowDefinitionError, PgFlow, RunFailed, RunNotFound
from pgflow_kombu.errors import ConnectionFailed, DatabaseError

app = PgFlow()
flow = app.flow("fragile", max_attempts=1)


@flow.step
def boom(run: dict) -> None:
    raise ValueError("out of stock")


try:  # a definition is checked when it is built, never at run time

    @flow.step(depends_on=["missing"])
    def orphan(missing: int) -> int:
        return missing

    raise AssertionError("not reached")
except FlowDefinitionError as exc:
    assert (exc.flow_slug, exc.step_slug) == ("fragile", "orphan")

app.start_worker()
try:
    handle = flow.start({})
    try:
        handle.wait(timeout=30)  # a failed run raises RunFailed; .run holds its step states
        raise AssertionError("not reached")
    except RunFailed as exc:
        assert exc.run.status == "failed"
        assert "out of stock" in exc.run.step_states[0].error_message

    try:
        app.get_run("00000000-0000-4000-8000-000000000000")
        raise AssertionError("not reached")
    except RunNotFound:
        pass

finally:
    app.close()

# Database errors are DatabaseErrors, by SQLSTATE class; match on .sqlstate and .diag, not text.
unreachable = PgFlow("postgresql://postgres@127.0.0.1:1/nowhere")
try:
    unreachable.get_run("00000000-0000-4000-8000-000000000000")
    raise AssertionError("not reached")
except ConnectionFailed as exc:  # a DatabaseError; sqlstate None: the client side failed
    assert isinstance(exc, DatabaseError) and exc.sqlstate is None
finally:
    unreachable.close()
