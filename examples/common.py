"""What every example does around its flow: a database, a worker in this process, a run."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pgflow_kombu import PgFlow
from pgflow_kombu.db import embedded, migrations


def prepare_database() -> str:
    """PGFLOW_DATABASE_URL, or the embedded server (announced on stderr); schema up to date."""
    url = os.environ.get("PGFLOW_DATABASE_URL") or embedded.database_url()
    os.environ["PGFLOW_DATABASE_URL"] = url
    migrations.upgrade(url)
    return url


def show(title: str, value: Any) -> None:
    print(f"{title}: {json.dumps(value, indent=2, default=str)}")


class running_worker:
    """``with running_worker(app):`` serves the app's flows in background threads."""

    def __init__(self, app: PgFlow, **options: Any) -> None:
        self.app = app
        self.options = options

    def __enter__(self) -> PgFlow:
        prepare_database()
        self.started = time.monotonic()
        self.app.start_worker(**self.options)
        return self.app

    def __exit__(self, *exc: object) -> None:
        self.app.stop_worker(timeout=10)
        self.app.close()
        print(f"(done in {time.monotonic() - self.started:.2f} s)")
