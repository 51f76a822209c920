"""The peers: Celery 5 (prefork ``-c 4``) on Redis, RabbitMQ and ``pgflow://``, procrastinate
(``worker -c 4``) and pgqueuer (``pgq run``, its defaults)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from benchmarks.workerbench.ours import fresh_database, remove_database
from benchmarks.workerbench.system import PerThread, RedisCounted
from benchmarks.workerbench.tasks import (
    CELERY_READY_QUEUE,
    PROC_QUEUE,
    PROC_READY_QUEUE,
    RUN_TAG,
    celery_app,
    procrastinate_app,
)


class CeleryPeer(RedisCounted):
    def __init__(
        self, broker: str, name: str, *, confirm: bool = False, durable: bool = False
    ) -> None:
        self.broker = broker
        self.name = name
        self.confirm = confirm
        self.durable = durable

    def environment(self) -> dict[str, str]:
        return {
            "BENCH_ROLE": "celery",
            "BENCH_CELERY_BROKER": self.broker,
            "BENCH_CELERY_CONFIRM": "1" if self.confirm else "0",
        }

    def setup(self) -> None:
        os.environ.update({k: v for k, v in self.environment().items() if k != "BENCH_ROLE"})
        self.app = celery_app()
        self.tasks = self.app.tasks
        self.queues = [self.app.conf.task_default_queue, CELERY_READY_QUEUE]
        with self.app.connection_for_write() as conn:
            for name in self.queues:
                conn.default_channel.queue_declare(queue=name, durable=True, auto_delete=False)
                conn.default_channel.queue_purge(name)
        self.reset()

    def teardown(self) -> None:
        self.stop_worker()
        with self.app.connection_for_write() as conn:
            for name in self.queues:  # the queues and exchanges of this run only
                conn.default_channel.queue_delete(name)
                conn.default_channel.exchange_delete(name)
        if self.broker.startswith("redis"):  # kombu keeps a Redis broker's bindings
            import redis

            client = redis.Redis.from_url(self.broker)
            for name in self.queues:
                client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
            client.close()
        self.app.close()

    def command(self) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "celery", "-A", "benchmarks.workerbench.tasks:celery"]
        command += ["worker", "-P", "prefork", "-c", "4", "-Q", ",".join(self.queues)]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
        return command, self.environment()

    def enqueue(self, i: int) -> None:
        self.tasks["c_noop"].delay(i)

    def enqueue_diamond(self, i: int) -> None:
        from celery import chain, group

        t = self.tasks
        chain(t["c_top"].s(i), group(t["c_side"].s(), t["c_side"].s()), t["c_bottom"].s())()

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self.tasks["c_stamp"].delay(i)
        return self.wait_stamp(i, timeout)


def broker_url(database_url: str) -> str:
    """Our kombu transport's URL for a database URL (libpq parameters need the long form)."""
    if database_url.startswith("postgresql://") and "?" not in database_url:
        return "pgflow://" + database_url.removeprefix("postgresql://")
    return "pgflow+" + database_url


class CeleryOnPgflow(CeleryPeer):
    """Celery with our ``pgflow://`` transport as its broker (publishes commit durably)."""

    def __init__(self, admin_url: str) -> None:
        super().__init__("", "Celery+pgflow://", durable=True)
        self.admin_url = admin_url
        self.database = f"{RUN_TAG}_celerypg_{os.getpid()}"

    def setup(self) -> None:
        import pgflow_kombu  # noqa: F401  (registers the pgflow:// scheme with kombu)
        from pgflow_kombu.db import migrations

        assert self.database is not None
        url = fresh_database(self.admin_url, self.database)
        migrations.upgrade(url)
        self.broker = broker_url(url)
        super().setup()

    def teardown(self) -> None:
        super().teardown()
        assert self.database is not None
        remove_database(self.admin_url, self.database)


class ProcrastinatePeer(RedisCounted):
    name = "procrastinate"
    durable = True
    has_diamond = False
    has_batch = True

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.database = f"{RUN_TAG}_proc_{os.getpid()}"

    def setup(self) -> None:
        from pgflow_kombu.db.urls import to_libpq

        assert self.database is not None
        self.url = to_libpq(fresh_database(self.admin_url, self.database))
        os.environ["BENCH_PROC_URL"] = self.url
        self.app = procrastinate_app()
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.reset()

    def teardown(self) -> None:
        self.stop_worker()
        self.app.close()
        assert self.database is not None
        remove_database(self.admin_url, self.database)

    def command(self) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "procrastinate", "--app", "benchmarks.workerbench.tasks"]
        command[-1] += ".proc_app"
        command += ["worker", "-c", "4", "-q", f"{PROC_QUEUE},{PROC_READY_QUEUE}"]
        return command, {"BENCH_ROLE": "procrastinate", "BENCH_PROC_URL": self.url}

    def enqueue(self, i: int) -> None:
        self.app.tasks["p_noop"].defer(i=i)

    def enqueue_batch(self, items: range) -> None:
        self.app.tasks["p_noop"].batch_defer(*({"i": i} for i in items))

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self.app.tasks["p_stamp"].defer(i=i)
        return self.wait_stamp(i, timeout)


class PgQueuerPeer(RedisCounted):
    """pgqueuer with its defaults (``pgqueuer.run``: batches of 10, no concurrency cap, its jobs
    being coroutines on one event loop), enqueued through its synchronous client, one
    connection per producer thread."""

    name = "pgqueuer"
    durable = True  # its default, durable tables
    has_diamond = False
    has_batch = True

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.database = f"{RUN_TAG}_pgq_{os.getpid()}"
        self._clients: PerThread[tuple[Any, Any]] = PerThread(
            self._open_client, lambda client: client[0].close()
        )

    def setup(self) -> None:
        from pgflow_kombu.db.urls import to_libpq

        assert self.database is not None
        self.url = to_libpq(fresh_database(self.admin_url, self.database))
        asyncio.run(self._install())
        self.reset()

    async def _install(self) -> None:
        import psycopg
        from pgqueuer import Queries
        from pgqueuer.db import PsycopgDriver

        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await Queries(PsycopgDriver(conn)).install()

    def _open_client(self) -> tuple[Any, Any]:
        import psycopg
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.adapters.persistence.queries import SyncQueries

        conn = psycopg.connect(self.url, autocommit=True)
        return conn, SyncQueries(SyncPsycopgDriver(conn))

    def queries(self) -> Any:
        """This thread's synchronous pgqueuer client."""
        return self._clients.get()[1]

    def teardown(self) -> None:
        self.stop_worker()
        self._clients.close_all()
        assert self.database is not None
        remove_database(self.admin_url, self.database)

    def command(self) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "benchmarks.workerbench.tasks"]
        return command, {"BENCH_PGQ_URL": self.url}

    def enqueue(self, i: int) -> None:
        self.queries().enqueue("q_noop", str(i).encode())

    def enqueue_batch(self, items: range) -> None:
        n = len(items)
        self.queries().enqueue(["q_noop"] * n, [str(i).encode() for i in items], [0] * n)

    def stamp(self, i: int, timeout: float = 60.0) -> float:
        self.queries().enqueue("q_stamp", str(i).encode())
        return self.wait_stamp(i, timeout)
