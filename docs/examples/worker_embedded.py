from pgflow_kombu import PgFlow
from pgflow_kombu.worker import Worker

app = PgFlow()


@app.task
def ping() -> str:
    return "pong"


@app.task
def echo(text: str) -> str:
    return text


# Per flow: each flow gets a worker of its own, stopped alone.
app.start_worker(ping, concurrency=2)
assert ping.delay().wait(timeout=30).output == {"ping": "pong"}
app.stop_worker(ping)

# Many flows from one pool, as `pgflow-kombu worker` does.
worker = Worker(app.flows, app.database_url, concurrency=8, pool="threads", shutdown_timeout=10)
worker.start()  # background threads; worker.run() blocks until SIGTERM/Ctrl-C instead
try:
    assert echo.delay(text="hi").wait(timeout=30).output == {"echo": "hi"}
finally:
    worker.stop(timeout=10)
    app.close()
