"""The app of the network-fault tests: one step that records each start, then sleeps.

Each start appends a JSON line to the file named by ``NETFAULTS_LOG``: the worker's name
(``NETFAULTS_NAME``), the task and attempt, and the wall-clock time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pgflow_kombu import PgFlow
from pgflow_kombu.flows import StepContext

app = PgFlow()

netcut = app.flow("netcut", max_attempts=6, base_delay=0)


@netcut.step
def work(run: dict[str, float], ctx: StepContext) -> int:
    path = os.environ.get("NETFAULTS_LOG")
    if path:
        line = {
            "worker": os.environ.get("NETFAULTS_NAME"),
            "run_id": ctx.run_id,
            "step": ctx.step_slug,
            "attempt": ctx.attempt,
            "at": time.time(),
        }
        with Path(path).open("a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
    time.sleep(run["sleep"])
    return int(run["n"])
