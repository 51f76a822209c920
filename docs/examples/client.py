import os

from pgflow_kombu import Client, PgFlow

app = PgFlow()


@app.task
def greet(name: str) -> str:
    return f"hello {name}"


app.start_worker()
# A Client needs no code: it starts any flow the database holds (a TypeScript one too).
client = Client(os.environ["PGFLOW_DATABASE_URL"])
try:
    run_id = client.start_flow("greet", {"name": "Ada"})  # a UUID
    run = client.wait(run_id, timeout=30)
    assert run.output == {"greet": "hello Ada"}
    assert [f.flow_slug for f in client.list_flows()] == ["greet"]
finally:
    client.close()
    app.close()
