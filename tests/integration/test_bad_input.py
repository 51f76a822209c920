"""Bad input through every entry point: a clear error, nothing changed, the process keeps working.

One table of cases over the API (PgFlow, flows, tasks, delay/apply_async/enqueue*), the Client,
the CLI, the worker's options, the kombu transport and pgflow's SQL called directly. Each case
asserts the error type (or the CLI's exit code) and that the message names the bad value; the
shared check then asserts that no row of pgflow's, pgmq's or ours changed and that a good run
still completes through the in-process worker started once for the module.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import pytest
from psycopg import sql

from pgflow_kombu import PgFlow
from pgflow_kombu.client import Client
from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.errors import translated_errors
from pgflow_kombu.db.urls import with_database
from pgflow_kombu.errors import (
    ConfigurationError,
    ConnectionFailed,
    ConstraintViolation,
    DatabaseError,
    DataRejected,
    FlowDefinitionError,
    FlowInputError,
    FlowNotFound,
    PgFlowError,
    RunNotFound,
    SchemaMissing,
    StepInputError,
)
from pgflow_kombu.flows.task import Task
from tests.celery_app.urls import broker_url
from tests.support.databases import clone_database, drop
from tests.support.sql import test_query

DOWN = "postgresql://someone:secret@127.0.0.1:1/nowhere"
INT_MAX = 2**31 - 1
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=timezone.utc)

CLI_APP = """
from pgflow_kombu import PgFlow

app = PgFlow()


@app.task
def add(a: int, b: int) -> int:
    return a + b
"""
RAISING_APP = """
from pgflow_kombu import PgFlow

app = PgFlow()
raise RuntimeError("the app module is broken")
"""


@dataclass
class Env:
    url: str
    empty_url: str  # a database without any schema
    app: PgFlow
    add: Task[Any, Any]
    client: Client
    finished_run: uuid.UUID
    workdir: Path

    def cli(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.workdir), *sys.path])
        return subprocess.run(
            [sys.executable, "-m", "pgflow_kombu", "--database-url", url or self.url, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def env(
    pg_admin_url: str, schema_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    url = clone_database(pg_admin_url, schema_template, prefix="t")
    empty_url = clone_database(pg_admin_url, "template0", prefix="e")
    workdir = tmp_path_factory.mktemp("bad_input")
    (workdir / "bad_input_cli_app.py").write_text(CLI_APP)
    (workdir / "bad_input_raising_app.py").write_text(RAISING_APP)
    (workdir / "bad_shape.json").write_text('{"flow_slug": "x", "steps": [')
    (workdir / "big_shape.json").write_text(
        '{"options": {"max_attempts": 1099511627776}, "steps": [{"slug": "a"}]}'
    )
    app = PgFlow(url)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    fan = app.flow("fan")

    @fan.map
    def double(n: int) -> int:
        return 2 * n

    # a flow only the database knows (as if a TypeScript app defined it)
    app.client.compile_flow(
        {
            "flow_slug": "dbonly",
            "options": {},
            "steps": [{"slug": "only", "deps": [], "step_type": "single", "options": {}}],
        }
    )
    app.start_worker(flows=["add", "fan"], heartbeat_interval=1, stalled_after=30)
    # the transport cases publish to this queue: it exists before they run
    with kombu.Connection(broker_url(url)) as conn:
        kombu.Queue("bad_input_q")(conn.default_channel).declare()
    finished = add.delay(1, 1)
    finished.wait(timeout=60)
    try:
        yield Env(url, empty_url, app, add, app.client, finished.run_id, workdir)
    finally:
        app.close()
        drop(pg_admin_url, url)
        drop(pg_admin_url, empty_url)


def with_user(url: str, user: str) -> str:
    """``url`` with another user name (and no password), whatever its host part looks like."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def identity(n: int) -> int:
    return n


def row_counts(url: str) -> dict[str, int]:
    """Exact row counts of every table of ours and pgmq's (one statement)."""
    with connect(url) as conn:
        tables = conn.execute(test_query("bad_input_tables")).fetchall()
        counts = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, count(*) FROM {}").format(
                sql.Literal(f"{schema}.{table}"), sql.Identifier(schema, table)
            )
            for schema, table in tables
        )
        return dict(conn.execute(counts).fetchall())


def good_run(env: Env) -> None:
    """The process (and its worker) still works: a run completes."""
    assert env.add.delay(2, 3).wait(timeout=60).output == {"add": 5}


# -- how a case checks its error -----------------------------------------------------------------


def raises(
    kind: type[BaseException], call: Callable[..., object], *fragments: str
) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        with pytest.raises(kind) as caught:
            call(env)
        message = str(caught.value)
        for fragment in fragments:
            assert fragment in message, message

    return check


def exits(
    code: int,
    *args: str,
    fragments: tuple[str, ...] = (),
    url: str | Callable[[Env], str] | None = None,
    traceback: bool = False,
) -> Callable[[Env], None]:
    """The CLI exits with ``code``; its last stderr line names each fragment; no traceback
    unless the user's own code raised."""

    def check(env: Env) -> None:
        result = env.cli(*args, url=url(env) if callable(url) else url)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines, result
        last = lines[-1]
        for fragment in fragments:
            assert fragment in last, result.stderr
        if traceback:
            assert "Traceback" in result.stderr
        else:
            assert "Traceback" not in result.stderr, result.stderr
            assert len(lines) <= 4, result.stderr  # click usage errors add usage lines
        if code == 1:
            assert len(lines) == 1 or traceback, result.stderr
            assert last.startswith("error: "), result.stderr

    return check


def sql_fails(
    name: str,
    params: dict[str, Any],
    kind: type[DatabaseError],
    sqlstate_class: str,
    *fragments: str,
) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        with connect(env.url) as conn, pytest.raises(kind) as caught, translated_errors():
            conn.execute(test_query(name), params)
        error = caught.value
        assert error.sqlstate is not None and error.sqlstate.startswith(sqlstate_class), error
        for fragment in fragments:
            assert fragment in str(error), str(error)

    return check


def transport(options: dict[str, Any]) -> Callable[[Env], object]:
    def call(env: Env) -> object:
        with kombu.Connection(broker_url(env.url), transport_options=options) as conn:
            return conn.SimpleQueue("bad_input_q").put({"x": 1})

    return call


def publish(**kwargs: Any) -> Callable[[Env], object]:
    def call(env: Env) -> object:
        with kombu.Connection(broker_url(env.url)) as conn:
            producer = conn.Producer()
            return producer.publish(
                kwargs.pop("body", {"x": 1}),
                routing_key="bad_input_q",
                declare=[kombu.Queue("bad_input_q")],
                **kwargs,
            )

    return call


def naive() -> datetime:
    return datetime.now() + timedelta(minutes=5)  # naive on purpose


# -- the cases -------------------------------------------------------------------------------------

Case = tuple[str, Callable[[Env], None]]


def _definition_cases() -> list[Case]:
    cases: list[Case] = []
    value: object
    too_big = {
        "max_attempts": 2**40,
        "timeout": 10**10,
        "base_delay": INT_MAX + 1,
        "start_delay": INT_MAX + 1,
    }
    for option, value in too_big.items():
        cases.append(
            (
                f"task_{option}_beyond_integer",
                raises(
                    FlowDefinitionError,
                    lambda e, o=option, v=value: e.app.task(name=f"t_{o}", **{o: v})(identity),
                    option,
                    str(value),
                ),
            )
        )
    for option, value in [("max_attempts", 2**40), ("timeout", 10**10), ("base_delay", 2**31)]:
        cases.append(
            (
                f"flow_{option}_beyond_integer",
                raises(
                    FlowDefinitionError,
                    lambda e, o=option, v=value: e.app.flow(f"f_{o}", **{o: v}),
                    str(value),
                ),
            )
        )
    for option, value in [
        ("max_attempts", -1),
        ("timeout", 0),
        ("timeout", 1.5),
        ("max_attempts", True),
        ("base_delay", "5"),
    ]:
        cases.append(
            (
                f"flow_{option}_{value!r}",
                raises(
                    FlowDefinitionError,
                    lambda e, o=option, v=value: e.app.flow(f"g_{o}", **{o: v}),
                    repr(value) if isinstance(value, str) else str(value),
                ),
            )
        )
    for slug in ["bad-slug", "1abc", "run", "f" * 48, ""]:
        cases.append(
            (
                f"flow_slug_{slug[:8] or 'empty'}",
                raises(FlowDefinitionError, lambda e, s=slug: e.app.flow(s), repr(slug)),
            )
        )
    cases += [
        (
            "step_timeout_beyond_integer",
            raises(
                FlowDefinitionError,
                lambda e: e.app.flow("h").step(timeout=10**10)(identity),
                "10000000000",
            ),
        ),
        (
            "step_depends_on_unknown",
            raises(
                FlowDefinitionError,
                lambda e: e.app.flow("k").step(depends_on=["ghost"])(identity),
                "ghost",
            ),
        ),
        (
            "upsert_step_option_beyond_integer",
            raises(
                FlowDefinitionError,
                lambda e: e.app.upsert_flow(
                    "u1", steps=[{"slug": "a", "options": {"timeout": 10**10}}]
                ),
                "10000000000",
            ),
        ),
        (
            "upsert_flow_option_beyond_integer",
            raises(
                FlowDefinitionError,
                lambda e: e.app.upsert_flow("u2", steps=[{"slug": "a"}], max_attempts=2**40),
                "1099511627776",
            ),
        ),
        (
            "upsert_unknown_dependency",
            raises(
                FlowDefinitionError,
                lambda e: e.app.upsert_flow("u3", steps=[{"slug": "a", "deps": ["zz"]}]),
                "zz",
            ),
        ),
        (
            "upsert_bad_step_type",
            raises(
                FlowDefinitionError,
                lambda e: e.app.upsert_flow("u4", steps=[{"slug": "a", "step_type": "weird"}]),
                "weird",
            ),
        ),
        (
            "upsert_bad_slug",
            raises(
                FlowDefinitionError, lambda e: e.app.upsert_flow("bad slug", steps=[]), "bad slug"
            ),
        ),
        (
            "compile_shape_option_beyond_integer",
            raises(
                FlowDefinitionError,
                lambda e: e.client.compile_flow(
                    {"flow_slug": "c1", "options": {"timeout": 10**10}, "steps": []}
                ),
                "10000000000",
            ),
        ),
        (
            "compile_shape_step_option_beyond_integer",
            raises(
                FlowDefinitionError,
                lambda e: e.client.compile_flow(
                    {
                        "flow_slug": "c2",
                        "options": {},
                        "steps": [
                            {
                                "slug": "a",
                                "deps": [],
                                "step_type": "single",
                                "options": {"max_attempts": 2**40},
                            }
                        ],
                    }
                ),
                "1099511627776",
            ),
        ),
    ]
    return cases


def _schedule_cases() -> list[Case]:
    cases: list[Case] = []
    bad_delays: list[tuple[str, Any, str]] = [
        ("negative", -1, "-1"),
        ("inf", math.inf, "inf"),
        ("nan", math.nan, "nan"),
        ("1e12", 1e12, "1000000000000"),
        ("true", True, "True"),
        ("text", "5", "'5'"),
    ]
    for name, value, shown in bad_delays:
        cases.append(
            (
                f"apply_async_countdown_{name}",
                raises(
                    FlowInputError, lambda e, v=value: e.add.apply_async((1, 2), countdown=v), shown
                ),
            )
        )
        cases.append(
            (
                f"enqueue_in_{name}",
                raises(
                    FlowInputError,
                    lambda e, v=value: e.app.enqueue_in(e.add, {"a": 1, "b": 2}, v),
                    shown,
                ),
            )
        )
        cases.append(
            (
                f"client_delay_{name}",
                raises(
                    FlowInputError,
                    lambda e, v=value: e.client.start_flow(
                        "add", {"a": 1, "b": 2}, delay_seconds=v
                    ),
                    shown,
                ),
            )
        )
    bad_times: list[tuple[str, Callable[[], Any], str]] = [
        ("text", lambda: "2030-01-01", "'2030-01-01'"),
        ("naive", naive, "naive"),
        ("year_9999", lambda: FAR_FUTURE, "9999"),
        ("number", lambda: 1700000000, "1700000000"),
    ]
    for name, make, shown in bad_times:
        cases.append(
            (
                f"apply_async_eta_{name}",
                raises(FlowInputError, lambda e, m=make: e.add.apply_async((1, 2), eta=m()), shown),
            )
        )
        cases.append(
            (
                f"enqueue_at_{name}",
                raises(
                    FlowInputError,
                    lambda e, m=make: e.app.enqueue_at(e.add, {"a": 1, "b": 2}, m()),
                    shown,
                ),
            )
        )
    cases += [
        (
            "apply_async_countdown_and_eta",
            raises(
                FlowInputError,
                lambda e: e.add.apply_async((1, 2), countdown=1, eta=datetime.now(timezone.utc)),
                "not both",
            ),
        ),
        (
            "client_scheduled_at_naive",
            raises(
                FlowInputError,
                lambda e: e.client.start_flow("add", {"a": 1, "b": 2}, scheduled_at=naive()),
                "naive",
            ),
        ),
    ]
    return cases


NOT_JSON: list[tuple[str, Any, str]] = [
    ("nan", {"a": math.nan}, "nan"),
    ("infinity", [math.inf], "inf"),
    ("nul_in_string", {"a": "x\x00y"}, "\\x00"),
    ("nul_in_key", {"a\x00": 1}, "\\x00"),
    ("object", {"a": object()}, "object"),
]


def _run_input_cases() -> list[Case]:
    cases: list[Case] = []
    for name, value, shown in NOT_JSON:
        cases.append(
            (
                f"start_registered_{name}",
                raises(FlowInputError, lambda e, v=value: e.app.start_flow("fan", v), shown),
            )
        )
        cases.append(
            (
                f"start_dbonly_{name}",
                raises(FlowInputError, lambda e, v=value: e.app.start_flow("dbonly", v), shown),
            )
        )
        cases.append(
            (
                f"client_start_{name}",
                raises(FlowInputError, lambda e, v=value: e.client.start_flow("dbonly", v), shown),
            )
        )
    cases += [
        (
            "start_many_one_bad_input",
            raises(
                FlowInputError,
                lambda e: e.client.start_many("dbonly", [{"a": 1}, {"a": math.nan}]),
                "nan",
            ),
        ),
        ("delay_nul_in_argument", raises(PgFlowError, lambda e: e.add.delay(1, "x\x00"), "b")),
        ("delay_wrong_type", raises(StepInputError, lambda e: e.add.delay("x", 2), "a")),
        ("delay_missing_argument", raises(StepInputError, lambda e: e.add.delay(1), "b")),
        ("delay_unknown_argument", raises(StepInputError, lambda e: e.add.delay(1, 2, c=3), "c")),
        (
            "root_map_input_not_array",
            raises(FlowInputError, lambda e: e.app.start_flow("fan", {"n": 1}), "array"),
        ),
        (
            "start_unknown_flow",
            raises(FlowNotFound, lambda e: e.app.start_flow("nope", {}), "nope"),
        ),
        (
            "client_start_unknown_flow",
            raises(FlowNotFound, lambda e: e.client.start_flow("nope", {}), "nope"),
        ),
        (
            "client_start_many_unknown_flow",
            raises(FlowNotFound, lambda e: e.client.start_many("nope", [{}]), "nope"),
        ),
        (
            "run_id_not_a_uuid",
            raises(
                FlowInputError,
                lambda e: e.app.start_flow("add", {"a": 1, "b": 2}, run_id="not-a-uuid"),
                "not-a-uuid",
            ),
        ),
        (
            "run_id_already_used",
            raises(
                FlowInputError,
                lambda e: e.client.start_flow("add", {"a": 1, "b": 2}, run_id=e.finished_run),
                "already",
            ),
        ),
        (
            "run_id_already_used_by_another_flow",
            lambda e: raises(
                FlowInputError,
                lambda e: e.client.start_flow("dbonly", {}, run_id=str(e.finished_run)),
                str(e.finished_run),
                "already used",
            )(e),
        ),
    ]
    return cases


def _reading_cases() -> list[Case]:
    return [
        ("get_run_not_a_uuid", raises(RunNotFound, lambda e: e.app.get_run("zzz"), "zzz")),
        (
            "get_run_unknown",
            raises(
                RunNotFound,
                lambda e: e.client.get_run("00000000-0000-0000-0000-000000000001"),
                "00000000-0000-0000-0000-000000000001",
            ),
        ),
        (
            "get_run_with_states_not_a_uuid",
            raises(RunNotFound, lambda e: e.client.get_run_with_states("12"), "12"),
        ),
        (
            "wait_unknown_run",
            raises(
                RunNotFound,
                lambda e: e.client.wait(uuid.UUID(int=7), timeout=5),
                "00000000-0000-0000-0000-000000000007",
            ),
        ),
        (
            "wait_negative_timeout",
            raises(ConfigurationError, lambda e: e.client.wait(e.finished_run, timeout=-1), "-1"),
        ),
        (
            "wait_nan_timeout",
            raises(
                ConfigurationError, lambda e: e.client.wait(e.finished_run, timeout=math.nan), "nan"
            ),
        ),
        (
            "list_runs_negative_limit",
            raises(ConfigurationError, lambda e: e.client.list_runs(limit=-1), "-1"),
        ),
        (
            "list_runs_limit_not_int",
            raises(ConfigurationError, lambda e: e.client.list_runs(limit="10"), "'10'"),
        ),
        (
            "list_runs_unknown_status",
            raises(ConfigurationError, lambda e: e.client.list_runs(status="done"), "done"),
        ),
        (
            "delete_unknown_flow",
            raises(FlowNotFound, lambda e: e.client.delete_flow("nope"), "nope"),
        ),
        (
            "flow_shape_unknown",
            raises(FlowNotFound, lambda e: e.client.get_flow_shape("nope"), "nope"),
        ),
    ]


def _connection_cases() -> list[Case]:
    return [
        (
            "client_server_down",
            raises(
                ConnectionFailed,
                lambda e: Client(DOWN).health_check(),
                "127.0.0.1:1",
                "is the server running",
            ),
        ),
        ("client_password_hidden", _password_hidden),
        (
            "client_unknown_database",
            raises(
                ConnectionFailed,
                lambda e: Client(with_database(e.url, "no_such_db_x")).list_flows(),
                "no_such_db_x",
                "create the database",
            ),
        ),
        (
            "client_unknown_role",
            raises(
                ConnectionFailed,
                lambda e: Client(with_user(e.url, "no_such_role")).list_flows(),
                "no_such_role",
                "user name",
            ),
        ),
        (
            "client_unknown_host",
            raises(
                ConnectionFailed,
                lambda e: Client("postgresql://postgres@no-such-host.invalid/x").list_flows(),
                "no-such-host.invalid",
                "host name",
            ),
        ),
        (
            "client_no_schema",
            raises(SchemaMissing, lambda e: Client(e.empty_url).list_flows(), "db upgrade"),
        ),
        (
            "client_no_schema_start",
            raises(
                SchemaMissing, lambda e: Client(e.empty_url).start_flow("add", {}), "db upgrade"
            ),
        ),
        (
            "app_not_a_postgres_url",
            raises(ConfigurationError, lambda e: PgFlow("mysql://root@localhost/db"), "mysql://"),
        ),
        (
            "app_server_down",
            raises(ConnectionFailed, lambda e: PgFlow(DOWN).start_flow("x", {}), "127.0.0.1:1"),
        ),
    ]


def _password_hidden(env: Env) -> None:
    with pytest.raises(ConnectionFailed) as caught:
        Client(DOWN).list_runs()
    assert "secret" not in str(caught.value)
    assert "someone:***@127.0.0.1:1" in str(caught.value)


def _worker_cases() -> list[Case]:
    def other_app(env: Env) -> PgFlow:
        app = PgFlow(env.url)
        app.task(name="other")(identity)
        return app

    def start(**options: Any) -> Callable[[Env], object]:
        def call(env: Env) -> object:
            app = other_app(env)
            try:
                return app.start_worker(**options)
            finally:
                app.close()

        return call

    return [
        ("worker_concurrency_zero", raises(ConfigurationError, start(concurrency=0), "0")),
        ("worker_unknown_pool", raises(ConfigurationError, start(pool="fibers"), "fibers")),
        ("worker_prefetch_negative", raises(ConfigurationError, start(prefetch=-2), "-2")),
        (
            "worker_stalled_before_heartbeat",
            raises(
                ConfigurationError, start(heartbeat_interval=5, stalled_after=2), "stalled_after"
            ),
        ),
        (
            "worker_heartbeat_nan",
            raises(ConfigurationError, start(heartbeat_interval=math.nan), "nan"),
        ),
        ("worker_unknown_flow", raises(FlowNotFound, start(flows=["nope"]), "nope")),
        ("worker_unknown_option", raises(TypeError, start(colour="blue"), "colour")),
    ]


def _transport_cases() -> list[Case]:
    return [
        (
            "transport_polling_negative",
            raises(
                ConfigurationError, transport({"polling_interval": -1}), "polling_interval", "-1"
            ),
        ),
        (
            "transport_polling_nan",
            raises(ConfigurationError, transport({"polling_interval": "nan"}), "polling_interval"),
        ),
        (
            "transport_visibility_inf",
            raises(
                ConfigurationError,
                transport({"visibility_timeout": math.inf}),
                "visibility_timeout",
            ),
        ),
        (
            "transport_visibility_text",
            raises(ConfigurationError, transport({"visibility_timeout": "soon"}), "soon"),
        ),
        (
            "transport_ack_mode",
            raises(ConfigurationError, transport({"ack_mode": "shred"}), "shred"),
        ),
        (
            "transport_batch_zero",
            raises(ConfigurationError, transport({"read_batch_size": 0}), "read_batch_size", "0"),
        ),
        (
            "transport_server_down",
            raises(
                ConnectionFailed,
                lambda e: kombu.Connection(DOWN.replace("postgresql", "pgflow")).connect(),
                "127.0.0.1:1",
            ),
        ),
        (
            "transport_header_with_nul",
            raises(DataRejected, publish(headers={"h": "a\x00b"}), "\\u0000"),
        ),
        ("transport_header_nan", raises(DataRejected, publish(headers={"h": math.nan}), "NaN")),
    ]


def _sql_cases() -> list[Case]:
    start = "bad_input_start_flow"
    return [
        (
            "sql_start_unknown_flow",
            sql_fails(
                "bad_input_start_flow_text",
                {"flow_slug": "nope", "input": "{}"},
                DatabaseError,
                "",
                "nope",
            ),
        ),
        (
            "sql_start_nul_in_json",
            sql_fails(
                "bad_input_start_flow_text",
                {"flow_slug": "add", "input": '{"a": "\\u0000"}'},
                DataRejected,
                "22",
                "\\u0000",
            ),
        ),
        (
            "sql_start_nan_in_json",
            sql_fails(
                "bad_input_start_flow_text",
                {"flow_slug": "add", "input": '{"a": NaN}'},
                DataRejected,
                "22",
                "NaN",
            ),
        ),
        (
            "sql_start_run_id_used",
            lambda e: sql_fails(
                start,
                {"flow_slug": "add", "input": "{}", "run_id": str(e.finished_run)},
                ConstraintViolation,
                "23",
                str(e.finished_run),
            )(e),
        ),
        (
            "sql_start_run_id_not_uuid",
            sql_fails(
                start,
                {"flow_slug": "add", "input": "{}", "run_id": "xyz"},
                DataRejected,
                "22",
                "xyz",
            ),
        ),
        (
            "sql_create_flow_bad_slug",
            sql_fails(
                "bad_input_create_flow",
                {"flow_slug": "bad-slug", "max_attempts": 3, "base_delay": 5, "timeout": 60},
                DatabaseError,
                "",
                "bad-slug",
            ),
        ),
        (
            "sql_create_flow_negative_attempts",
            sql_fails(
                "bad_input_create_flow",
                {"flow_slug": "neg", "max_attempts": -1, "base_delay": 5, "timeout": 60},
                DatabaseError,
                "",
                "-1",
            ),
        ),
        (
            "sql_create_flow_attempts_beyond_integer",
            sql_fails(
                "bad_input_create_flow",
                {"flow_slug": "big", "max_attempts": 2**40, "base_delay": 5, "timeout": 60},
                DataRejected,
                "22003",
                "integer out of range",  # PostgreSQL's cast names no value
            ),
        ),
        (
            "sql_add_step_unknown_flow",
            sql_fails(
                "bad_input_add_step",
                {"flow_slug": "nope", "step_slug": "a", "deps": []},
                DatabaseError,
                "",
                "nope",
            ),
        ),
        (
            "sql_add_step_unknown_dep",
            sql_fails(
                "bad_input_add_step",
                {"flow_slug": "add", "step_slug": "z", "deps": ["ghost"]},
                DatabaseError,
                "",
                "ghost",
            ),
        ),
        (
            "sql_start_delayed_negative",
            sql_fails(
                "bad_input_start_flow_delayed",
                {"flow_slug": "add", "delay": -5},
                DatabaseError,
                "",
                "-5",
            ),
        ),
    ]


def _cli_cases() -> list[Case]:
    run = "00000000-0000-0000-0000-000000000009"
    return [
        (
            "cli_runs_start_unknown_flow",
            exits(5, "runs", "start", "nope", "{}", fragments=("nope",)),
        ),
        (
            "cli_runs_start_not_json",
            exits(2, "runs", "start", "add", "{oops", fragments=("not JSON",)),
        ),
        ("cli_runs_start_nan", exits(2, "runs", "start", "add", '{"a": NaN}', fragments=("NaN",))),
        (
            "cli_runs_start_infinity",
            exits(2, "runs", "start", "add", "[Infinity]", fragments=("Infinity",)),
        ),
        (
            "cli_runs_start_nul",
            exits(2, "runs", "start", "add", '"a\\u0000"', fragments=("\\x00",)),
        ),
        (
            "cli_runs_start_negative_delay",
            exits(2, "runs", "start", "add", "{}", "--delay", "-1", fragments=("-1",)),
        ),
        (
            "cli_runs_start_inf_delay",
            exits(2, "runs", "start", "add", "{}", "--delay", "inf", fragments=("inf",)),
        ),
        (
            "cli_runs_start_wait_negative_timeout",
            exits(
                2,
                "runs",
                "start",
                "add",
                '{"a": 1, "b": 2}',
                "--wait",
                "--timeout",
                "-1",
                fragments=("-1",),
            ),
        ),
        (
            "cli_runs_list_negative_limit",
            exits(2, "runs", "list", "--limit", "-1", fragments=("-1",)),
        ),
        (
            "cli_runs_show_not_uuid",
            exits(5, "runs", "show", "not-a-uuid", fragments=("not-a-uuid",)),
        ),
        ("cli_runs_show_unknown", exits(5, "runs", "show", run, fragments=(run,))),
        (
            "cli_runs_wait_unknown",
            exits(5, "runs", "wait", run, "--timeout", "2", fragments=(run,)),
        ),
        (
            "cli_runs_wait_negative_timeout",
            exits(2, "runs", "wait", run, "--timeout", "-3", fragments=("-3",)),
        ),
        ("cli_flows_show_unknown", exits(5, "flows", "show", "nope", fragments=("nope",))),
        (
            "cli_flows_delete_unknown",
            exits(5, "flows", "delete", "nope", "--yes", fragments=("nope",)),
        ),
        (
            "cli_flows_upsert_invalid_json",
            exits(
                2,
                "flows",
                "upsert",
                "x",
                "--file",
                "bad_shape.json",
                fragments=("bad_shape.json", "JSON"),
            ),
        ),
        (
            "cli_flows_upsert_option_beyond_integer",
            exits(
                1, "flows", "upsert", "x", "--file", "big_shape.json", fragments=("1099511627776",)
            ),
        ),
        (
            "cli_flows_upsert_missing_file",
            exits(2, "flows", "upsert", "x", "--file", "missing.json", fragments=("missing.json",)),
        ),
        ("cli_flows_upsert_no_source", exits(2, "flows", "upsert", "x", fragments=("-A",))),
        (
            "cli_flows_upsert_missing_module",
            exits(
                1,
                "flows",
                "upsert",
                "add",
                "-A",
                "no_such_module_x",
                fragments=("no_such_module_x",),
            ),
        ),
        (
            "cli_flows_upsert_module_raises",
            exits(
                1,
                "flows",
                "upsert",
                "add",
                "-A",
                "bad_input_raising_app",
                fragments=("bad_input_raising_app", "the app module is broken"),
                traceback=True,
            ),
        ),
        (
            "cli_flows_upsert_not_an_app",
            exits(
                1,
                "flows",
                "upsert",
                "add",
                "-A",
                "bad_input_cli_app:add",
                fragments=("bad_input_cli_app", "not a PgFlow app"),
            ),
        ),
        (
            "cli_worker_module_raises",
            exits(
                1,
                "worker",
                "-A",
                "bad_input_raising_app",
                fragments=("bad_input_raising_app", "the app module is broken"),
                traceback=True,
            ),
        ),
        (
            "cli_worker_missing_module",
            exits(1, "worker", "-A", "no_such_module_y", fragments=("no_such_module_y",)),
        ),
        (
            "cli_worker_concurrency_zero",
            exits(2, "worker", "-A", "bad_input_cli_app", "-c", "0", fragments=("0",)),
        ),
        (
            "cli_worker_unknown_flow",
            exits(1, "worker", "-A", "bad_input_cli_app", "--flows", "nope", fragments=("nope",)),
        ),
        (
            "cli_health_server_down",
            exits(1, "health", url=DOWN, fragments=("127.0.0.1:1", "is the server running")),
        ),
        (
            "cli_runs_list_server_down",
            exits(1, "runs", "list", url=DOWN, fragments=("127.0.0.1:1",)),
        ),
        (
            "cli_flows_list_server_down",
            exits(1, "flows", "list", url=DOWN, fragments=("127.0.0.1:1",)),
        ),
        (
            "cli_health_unknown_role",
            exits(
                1,
                "health",
                url=lambda e: with_user(e.url, "nobody_x"),
                fragments=("nobody_x", "user name"),
            ),
        ),
        (
            "cli_health_unknown_database",
            exits(
                1,
                "health",
                url=lambda e: with_database(e.url, "no_such_db_y"),
                fragments=("no_such_db_y", "create the database"),
            ),
        ),
        (
            "cli_health_unknown_host",
            exits(
                1,
                "health",
                url="postgresql://postgres@no-such-host.invalid/x",
                fragments=("no-such-host.invalid", "host name"),
            ),
        ),
        (
            "cli_health_no_schema",
            exits(1, "health", url=lambda e: e.empty_url, fragments=("db upgrade",)),
        ),
        (
            "cli_flows_list_no_schema",
            exits(1, "flows", "list", url=lambda e: e.empty_url, fragments=("db upgrade",)),
        ),
        (
            "cli_runs_list_no_schema",
            exits(1, "runs", "list", url=lambda e: e.empty_url, fragments=("db upgrade",)),
        ),
        (
            "cli_runs_start_no_schema",
            exits(
                1,
                "runs",
                "start",
                "add",
                "{}",
                url=lambda e: e.empty_url,
                fragments=("db upgrade",),
            ),
        ),
        (
            "cli_workers_list_no_schema",
            exits(1, "workers", "list", url=lambda e: e.empty_url, fragments=("db upgrade",)),
        ),
        (
            "cli_not_a_postgres_url",
            exits(1, "health", url="mysql://root@localhost/db", fragments=("mysql://",)),
        ),
    ]


CASES: list[Case] = [
    *_definition_cases(),
    *_schedule_cases(),
    *_run_input_cases(),
    *_reading_cases(),
    *_connection_cases(),
    *_worker_cases(),
    *_transport_cases(),
    *_sql_cases(),
    *_cli_cases(),
]


def test_the_table_is_large_and_ids_are_unique() -> None:
    ids = [case_id for case_id, _ in CASES]
    assert len(set(ids)) == len(ids)
    assert len(ids) >= 80


@pytest.mark.parametrize("case", CASES, ids=[case_id for case_id, _ in CASES])
def test_bad_input(env: Env, case: Case) -> None:
    _, check = case
    before = row_counts(env.url)
    check(env)
    assert row_counts(env.url) == before
    good_run(env)
