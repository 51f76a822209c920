"""The no-op jobs of every system, imported by the workers the benchmark starts.

Ours is an ``@app.task`` (and a 4-step diamond flow); the peers' jobs count their completions in
Redis (one extra Redis call per job for them) and stamp their start time there for the latency
runs. A peer's app is built only in the process that serves it (``BENCH_ROLE``), so that our
worker's import stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from pgflow_kombu import PgFlow

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Names the Redis keys, queues and databases of one benchmark run (inherited by its workers).
RUN_TAG = os.environ.setdefault("BENCH_TAG", f"bench{os.getpid()}")
COUNT_KEY = f"{RUN_TAG}:done"
STAMP_KEY = f"{RUN_TAG}:stamps"
CELERY_QUEUE = f"{RUN_TAG}_celery"
CELERY_READY_QUEUE = f"{RUN_TAG}_celery_ready"
PROC_QUEUE = f"{RUN_TAG}_proc"
PROC_READY_QUEUE = f"{RUN_TAG}_proc_ready"

# -- ours ------------------------------------------------------------------------------------------

app = PgFlow()


@app.task(name="bench_noop")
def bench_noop(i: int = 0) -> None:
    return None


@app.task(name="bench_stamp")
def bench_stamp(i: int = 0) -> float:
    return time.time()


diamond = app.flow("bench_diamond")


@diamond.step
def top(run: int) -> int:
    return run


@diamond.step
def left(top: int) -> int:
    return top


@diamond.step
def right(top: int) -> int:
    return top


@diamond.step
def bottom(left: int, right: int) -> int:
    return left + right


# -- counting in Redis -----------------------------------------------------------------------------


@functools.cache
def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL)


def count_done() -> None:
    redis_client().incr(COUNT_KEY)


def stamp_started(i: int) -> None:
    redis_client().rpush(STAMP_KEY, json.dumps([i, time.time()]))


# -- Celery ----------------------------------------------------------------------------------------


def celery_app() -> Any:
    """Celery on ``BENCH_CELERY_BROKER``; ``BENCH_CELERY_CONFIRM=1`` turns on publisher confirms."""
    from celery import Celery

    broker = os.environ.get("BENCH_CELERY_BROKER", REDIS_URL)
    capp = Celery("bench", broker=broker, backend=REDIS_URL)
    capp.conf.update(
        task_default_queue=CELERY_QUEUE,
        worker_hijack_root_logger=False,
        result_expires=600,
        broker_connection_retry_on_startup=True,
    )
    if os.environ.get("BENCH_CELERY_CONFIRM") == "1":
        capp.conf.broker_transport_options = {"confirm_publish": True}

    @capp.task(name="c_noop", ignore_result=True, shared=False)
    def c_noop(i: int = 0) -> None:
        count_done()

    @capp.task(name="c_stamp", ignore_result=True, shared=False, queue=CELERY_READY_QUEUE)
    def c_stamp(i: int = 0) -> None:
        stamp_started(i)

    @capp.task(name="c_top", shared=False)
    def c_top(i: int) -> int:
        return i

    @capp.task(name="c_side", shared=False)
    def c_side(value: int) -> int:
        return value

    @capp.task(name="c_bottom", shared=False)
    def c_bottom(values: list[int]) -> int:
        count_done()
        return sum(values)

    return capp


# -- procrastinate ---------------------------------------------------------------------------------


def procrastinate_app() -> Any:
    import procrastinate

    conninfo = os.environ.get("BENCH_PROC_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    papp = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @papp.task(name="p_noop", queue=PROC_QUEUE)
    def p_noop(i: int = 0) -> None:
        count_done()

    @papp.task(name="p_stamp", queue=PROC_READY_QUEUE)
    def p_stamp(i: int = 0) -> None:
        stamp_started(i)

    return papp


# -- pgqueuer --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pgqueuer_factory() -> AsyncIterator[Any]:
    """pgqueuer's app on one connection of asyncpg, the driver its documentation starts with."""
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job

    conn = await asyncpg.connect(os.environ["BENCH_PGQ_URL"])
    try:
        pgq = PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("q_noop")
        async def q_noop(job: Job) -> None:
            count_done()

        @pgq.entrypoint("q_stamp")
        async def q_stamp(job: Job) -> None:
            stamp_started(int(job.payload or b"0"))

        yield pgq
    finally:
        await conn.close()


if os.environ.get("BENCH_ROLE") == "celery":
    celery = celery_app()
if os.environ.get("BENCH_ROLE") == "procrastinate":
    proc_app = procrastinate_app()


def serve_pgqueuer() -> None:
    """pgqueuer's worker with its defaults (``pgq run`` less its command line, whose log-level
    option fails in pgqueuer 1.6.0 with this typer)."""
    import asyncio

    from pgqueuer import run

    asyncio.run(run(pgqueuer_factory))


if __name__ == "__main__":
    serve_pgqueuer()
