# not run: needs a Celery worker process (tests/integration/test_celery.py runs one)
from celery import Celery

import pgflow_kombu  # noqa: F401  (registers the pgflow:// scheme with kombu)

app = Celery("proj", broker="pgflow://postgres@localhost:5432/mydb")


@app.task
def add(x: int, y: int) -> int:
    return x + y


# celery -A proj worker, then: add.delay(2, 3)
