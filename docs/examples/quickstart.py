from pgflow_kombu import PgFlow

app = PgFlow()  # the database: PGFLOW_DATABASE_URL, or PgFlow("postgresql://...")


@app.task(max_attempts=3)
def add(x: int, y: int) -> int:
    return x + y


app.start_worker()  # a worker in this process; in production: pgflow-kombu worker -A module:app
try:
    handle = add.delay(2, 3)  # a run row in PostgreSQL and a message on the flow's queue
    run = handle.wait(timeout=30)  # woken by NOTIFY when the run finishes
    assert run.status == "completed"
    assert run.output == {"add": 5}  # a task is a one-step flow: {step slug: return value}
finally:
    app.close()  # stops the worker, closes the connections
