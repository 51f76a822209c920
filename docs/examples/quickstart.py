from pgflow_kombu import PgFlow

app = PgFlow()  # the database: PGFLOW_DATABASE_URL, or PgFlow("postgresql://...")


@app.task(max_attempts=3)
def add(x: int, y: int) -> int:
    return x + y


app.start_worker()  # a worker in this process; in production: pgflow-kombu worker -A module:app
try:
    handle = add.delay(2, 3)  # a run row in PostgreSQL and a message on the flow's queue
    assert handle.get(timeout=30) == 5  # the return value, as in Celery (woken by NOTIFY)
    assert handle.status == "completed"
    assert handle.output == {"add": 5}  # the run output: a task is a one-step flow
finally:
    app.close()  # stops the worker, closes the connections
