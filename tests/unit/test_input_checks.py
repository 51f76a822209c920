"""The shared checks behind the bad-input table, without a database: bounds, schedules, JSON,
transport options and the classification of connection errors."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from psycopg import errors as pg_errors

from pgflow_kombu.client import check_timeout, run_id_text, run_input
from pgflow_kombu.db.errors import connection_failure, is_connection_error
from pgflow_kombu.errors import (
    ConfigurationError,
    ConnectionFailed,
    DataRejected,
    FlowDefinitionError,
    FlowInputError,
)
from pgflow_kombu.flows.dispatch import MAX_DELAY, schedule_delay
from pgflow_kombu.flows.options import INT4_MAX, FlowOptions, StepOptions
from pgflow_kombu.transport.options import Options

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("name", ["max_attempts", "base_delay", "timeout"])
def test_flow_options_end_at_the_integer_column(name: str) -> None:
    assert FlowOptions(**{name: INT4_MAX}).validate("f").as_dict() == {name: INT4_MAX}
    with pytest.raises(FlowDefinitionError, match=f"{name} must be at most {INT4_MAX}.*{2**31}"):
        FlowOptions(**{name: INT4_MAX + 1}).validate("f")


def test_step_start_delay_ends_at_the_integer_column() -> None:
    with pytest.raises(FlowDefinitionError, match="step 's': start_delay") as caught:
        StepOptions(start_delay=2**40).validate("f", "s")
    assert caught.value.step_slug == "s"


@pytest.mark.parametrize(
    ("delay", "scheduled_at", "seconds"),
    [
        (None, None, 0),
        (0, None, 0),
        (0.2, None, 1),
        (MAX_DELAY, None, MAX_DELAY),
        (None, NOW + timedelta(seconds=90.5), 91),
        (None, NOW - timedelta(days=3), 0),
    ],
)
def test_schedules_become_whole_seconds(
    delay: float | None, scheduled_at: datetime | None, seconds: int
) -> None:
    assert schedule_delay(delay, scheduled_at, now=NOW) == seconds


@pytest.mark.parametrize(
    ("delay", "scheduled_at", "message"),
    [
        (-1, None, "got -1"),
        (math.inf, None, "got inf"),
        (math.nan, None, "got nan"),
        (MAX_DELAY + 1, None, f"at most {MAX_DELAY}"),
        (True, None, "got True"),
        ("5", None, "got '5'"),
        (None, "2030-01-02", "got '2030-01-02'"),
        (None, datetime(2030, 1, 2), "naive"),
        (None, NOW + timedelta(seconds=MAX_DELAY + 1), "too far ahead"),
        (1, NOW, "not both"),
    ],
)
def test_bad_schedules_are_named(delay: Any, scheduled_at: Any, message: str) -> None:
    with pytest.raises(FlowInputError, match=message):
        schedule_delay(delay, scheduled_at, now=NOW)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": "x\x00"}, r"at \$\.a"),
        ({"k\x00": 1}, r"key 'k\\x00'"),
        ([1, math.nan], r"at \$\[1\]"),
        ({"a": [math.inf]}, r"at \$\.a\[0\]"),
    ],
)
def test_run_inputs_jsonb_refuses_are_refused_here(value: Any, where: str) -> None:
    with pytest.raises(FlowInputError, match=where):
        run_input(value)


def test_run_ids_must_be_uuids() -> None:
    assert run_id_text("00000000000000000000000000000001") == "00000000-0000-0000-0000-000000000001"
    with pytest.raises(FlowInputError, match="'nope' is not a UUID"):
        run_id_text("nope")


@pytest.mark.parametrize("timeout", [-1, math.nan, "10", True])
def test_wait_timeouts(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be"):
        check_timeout(timeout)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"polling_interval": -1}, "polling_interval .* got -1"),
        ({"visibility_timeout": "inf"}, "visibility_timeout .* got inf"),
        ({"sweep_interval": "nan"}, "sweep_interval .* got nan"),
        ({"read_batch_size": 0}, "read_batch_size .* got 0"),
        ({"pool_size": -3}, "pool_size .* got -3"),
        ({"ack_mode": "shred"}, "'shred'"),
    ],
)
def test_transport_options_name_the_bad_value(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Options.from_transport_options(options)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (pg_errors.AdminShutdown(), True),
        (pg_errors.QueryCanceled(), False),
        (pg_errors.LockNotAvailable(), False),
        (pg_errors.UniqueViolation(), False),
        (ConnectionFailed("gone"), True),
        (DataRejected("integer out of range", sqlstate="22003"), False),
        (ValueError("unrelated"), False),
    ],
)
def test_which_errors_mean_the_connection_is_gone(error: BaseException, lost: bool) -> None:
    assert is_connection_error(error) is lost


def test_a_wrapped_connection_error_is_one() -> None:
    # kombu re-raises its connection errors as its own OperationalError, chained
    try:
        try:
            raise ConnectionFailed("cannot connect")
        except ConnectionFailed as exc:
            raise KombuOperationalError(str(exc)) from exc
    except KombuOperationalError as wrapped:
        assert is_connection_error(wrapped)


@pytest.mark.parametrize(
    ("text", "reason", "hint"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection '
            "refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "Connection refused",
            "is the server running",
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: FATAL:  role '
            '"bob" does not exist',
            'role "bob" does not exist',
            "user name",
        ),
        (
            'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
            'password authentication failed for user "bob"',
            'password authentication failed for user "bob"',
            "password",
        ),
    ],
)
def test_connection_failures_say_what_and_where(text: str, reason: str, hint: str) -> None:
    message = str(connection_failure("postgresql://bob:pw@h/db", psycopg.OperationalError(text)))
    assert message.startswith(f"cannot connect to postgresql://bob:***@h/db: {reason}; ")
    assert hint in message
    assert "\n" not in message and "pw@" not in message
