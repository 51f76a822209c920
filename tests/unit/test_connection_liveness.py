"""Connection parameters for liveness, the worker's one-line loss/return log, read visibility."""

from __future__ import annotations

import logging
import time

import pytest

from pgflow_kombu.db.connect import connection_params
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.settings import Liveness
from pgflow_kombu.worker.claims import read_visibility
from pgflow_kombu.worker.connectivity import Connectivity

URL = "postgresql://u@db.example/app"


def server_settings(options: str) -> dict[str, str]:
    parts = options.split()
    return dict(p.split("=", 1) for p, flag in zip(parts[1:], parts, strict=False) if flag == "-c")


def test_defaults_on_both_sides() -> None:
    params = connection_params(URL, settings=Liveness())
    assert {k: params[k] for k in params if k != "options"} == {
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10000,
    }
    assert server_settings(params["options"]) == {
        "tcp_keepalives_idle": "5",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "10000",
    }


def test_statement_timeout_and_caller_options() -> None:
    params = connection_params(
        URL, statement_timeout=2.5, options="-c synchronous_commit=off", settings=Liveness()
    )
    settings = server_settings(params["options"])
    assert settings["statement_timeout"] == "2500"
    assert settings["synchronous_commit"] == "off"


def test_url_parameters_win_on_both_sides() -> None:
    url = URL + "?keepalives_idle=9&tcp_user_timeout=1500&options=-c%20statement_timeout%3D1"
    params = connection_params(url, statement_timeout=30, settings=Liveness())
    assert "keepalives_idle" not in params and "tcp_user_timeout" not in params
    options = params["options"]
    assert server_settings(options)["tcp_keepalives_idle"] == "9"
    assert server_settings(options)["tcp_user_timeout"] == "1500"
    # The URL's options come last: its statement_timeout is the one the server keeps.
    assert options.endswith("-c statement_timeout=1")


def test_keepalives_off_in_the_url_asks_none_of_the_server() -> None:
    params = connection_params(URL + "?keepalives=0", settings=Liveness())
    assert "tcp_keepalives_idle" not in params["options"]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFLOW_KEEPALIVES_IDLE", "2")
    monkeypatch.setenv("PGFLOW_TCP_USER_TIMEOUT", "4.5")
    assert connection_params(URL)["keepalives_idle"] == 2
    assert connection_params(URL)["tcp_user_timeout"] == 4500
    monkeypatch.setenv("PGFLOW_KEEPALIVES_COUNT", "0")
    with pytest.raises(ConfigurationError, match="PGFLOW_KEEPALIVES_COUNT"):
        connection_params(URL)


def test_a_loss_is_logged_once_and_the_return_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgflow_kombu.worker")
    connectivity = Connectivity()
    before_loss = time.monotonic()
    for _ in range(3):
        connectivity.failed(time.monotonic(), "timed out")
    assert connectivity.lost
    connectivity.succeeded()
    connectivity.succeeded()
    # A statement sent before the database was back belongs to the outage that ended.
    connectivity.failed(before_loss, "timed out")
    assert not connectivity.lost
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["db_unreachable", "db_reconnected"]
    connectivity.failed(time.monotonic(), "again")
    assert [getattr(r, "event", None) for r in caplog.records][-1] == "db_unreachable"


def test_read_visibility_follows_stalled_after() -> None:
    assert read_visibility(6.0) == 6
    assert read_visibility(30.5) == 31
    assert read_visibility(0.5) == 2
