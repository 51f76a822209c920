"""An app with a per-second schedule, for the tests that run several worker processes."""

from __future__ import annotations

from pgflow_kombu import PgFlow

app = PgFlow()


@app.task(schedule="* * * * * *")
def beat() -> str:
    return "ok"
