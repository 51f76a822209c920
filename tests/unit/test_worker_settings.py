"""One worker configuration: ``WorkerSettings`` is what ``Worker``, ``app.start_worker``, the
``pgflow-kombu worker`` command and the ``PGFLOW_WORKER_*`` environment all read.

The cases are generated from the model's fields, so a setting added to it is checked here
(default, environment variable, option, bad value, and where the worker uses it) without
editing this file, except :data:`USED`, which must then say where the worker uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, get_args

import click
import pytest
from click.testing import CliRunner

from pgflow_kombu import PgFlow
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows import Flow
from pgflow_kombu.settings import (
    DEPRECATED_ENV,
    WORKER_ENV_PREFIX,
    PoolKind,
    Settings,
    WorkerSettings,
)
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.command import default_text, setting_flag, worker_options, worker_settings

URL = "postgresql://nobody@127.0.0.1:1/none"
FIELDS = list(WorkerSettings.model_fields)

one = Flow("one")


@one.step
def first(run: int) -> int:
    return run


# Where a running worker takes each setting from: a setting the worker never reads fails
# test_every_setting_is_used.
USED: dict[str, Callable[[Worker], Any]] = {
    "concurrency": lambda w: w.concurrency,
    "pool": lambda w: w.pool_kind,
    "prefetch": lambda w: w.prefetch,
    "shutdown_timeout": lambda w: w.shutdown_timeout,
    "heartbeat_interval": lambda w: w.membership.heartbeat_interval,
    "stalled_after": lambda w: w.membership.stalled_after,
    "recovery_interval": lambda w: w.membership.recovery_interval,
    "retention": lambda w: w.retention and w.retention.retention,
    "retention_interval": lambda w: w.retention and w.retention.interval,
    "report_batch": lambda w: w._reporter.batch_size,
    "fetch_timeout": lambda w: w.fetch_timeout,
    "synchronous_commit": lambda w: w._claims.link.synchronous_commit,
    "scheduler": lambda w: w.scheduler is not None,
    "scheduler_poll_interval": lambda w: w.scheduler and w.scheduler.poll_interval,
}


def _kind(name: str) -> type:
    annotation = WorkerSettings.model_fields[name].annotation
    kinds = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return kinds[0] if isinstance(kinds[0], type) else str  # a Literal: the pool's names


def other_value(name: str) -> tuple[str, Any]:
    """A valid value unlike the default, as text (environment, option) and as parsed.

    With it, retention is on (so its interval is used) and the scheduler stays on."""
    default = WorkerSettings.model_fields[name].default
    kind = _kind(name)
    if name == "pool":
        choice = next(p for p in get_args(PoolKind) if p != default)
        return choice, choice
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if kind is timedelta:
        return "2h", timedelta(hours=2)
    if kind is int:
        return "7", 7
    half = default / 2 if default else 2.5  # halved: heartbeats stay below stalled_after
    return str(half), half


def bad_value(name: str) -> str:
    return {bool: "maybe", timedelta: "a week", int: "many", float: "soon"}.get(
        _kind(name), "gevent"
    )


# Settings the worker uses only together with another one.
NEEDS: dict[str, dict[str, Any]] = {
    "retention_interval": {"retention": "1d"},
    "scheduler_poll_interval": {},
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in FIELDS:
        monkeypatch.delenv(WORKER_ENV_PREFIX + name.upper(), raising=False)
    for old in DEPRECATED_ENV:
        monkeypatch.delenv(old, raising=False)
    yield


def cli_settings(args: list[str], env: dict[str, str] | None = None) -> WorkerSettings | str:
    """The settings the worker command builds from ``args`` and ``env``, else its error."""
    seen: list[WorkerSettings] = []

    @click.command()
    @worker_options()
    def command(**options: Any) -> None:
        seen.append(worker_settings(options))

    result = CliRunner().invoke(command, ["-A", "x:app", *args], env=env)
    return seen[0] if result.exit_code == 0 else f"exit {result.exit_code}: {result.output}"


def test_every_setting_is_used() -> None:
    assert set(USED) == set(FIELDS)


def test_the_command_the_environment_and_the_worker_agree_on_every_default() -> None:
    defaults = WorkerSettings()
    worker = Worker({"one": one}, URL)
    assert worker.settings == defaults
    assert cli_settings([]) == defaults
    assert Settings.load().worker == defaults
    assert PgFlow().settings.worker == defaults
    help_text = " ".join(CliRunner().invoke(_help_command(), ["--help"]).output.split())
    for name in FIELDS:
        expected = WorkerSettings.model_fields[name].default
        assert getattr(worker.settings, name) == expected, name
        flag = setting_flag(name)
        assert flag in help_text, name
        env = f"{WORKER_ENV_PREFIX}{name.upper()}; default: {default_text(name)}]"
        assert env in help_text, name
    assert worker.prefetch == 2 * defaults.concurrency


def _help_command() -> click.Command:
    @click.command()
    @worker_options()
    def command(**options: Any) -> None:
        pass

    return command


@pytest.mark.parametrize("name", FIELDS)
def test_each_environment_variable_reaches_the_worker(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, value = other_value(name)
    monkeypatch.setenv(WORKER_ENV_PREFIX + name.upper(), text)
    extra = NEEDS.get(name, {})
    worker = Worker({"one": one}, URL, **extra)
    assert getattr(worker.settings, name) == value
    assert USED[name](worker) == value
    # The command reads the same variable, and its option wins over it.
    from_env = cli_settings([])
    assert isinstance(from_env, WorkerSettings) and getattr(from_env, name) == value
    default = WorkerSettings.model_fields[name].default
    if isinstance(default, bool):
        option = [f"--{'' if default else 'no-'}{setting_flag(name)[2:]}"]
    elif default is None:
        return  # nothing to set back: unset is the default
    else:
        option = [setting_flag(name), str(default)]
    from_option = cli_settings(option)
    assert isinstance(from_option, WorkerSettings), from_option
    assert getattr(from_option, name) == default


@pytest.mark.parametrize("name", FIELDS)
def test_each_option_reaches_the_settings(name: str) -> None:
    text, value = other_value(name)
    if isinstance(value, bool):
        args = [f"--{'' if value else 'no-'}{setting_flag(name)[2:]}"]
    else:
        args = [setting_flag(name), text]
    settings = cli_settings(args)
    assert isinstance(settings, WorkerSettings), settings
    assert getattr(settings, name) == value


@pytest.mark.parametrize("name", FIELDS)
def test_a_bad_value_names_its_variable_option_or_keyword(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = bad_value(name)
    variable = WORKER_ENV_PREFIX + name.upper()
    if _kind(name) is not bool:  # a switch takes no value on the command line
        refused = cli_settings([setting_flag(name), bad])
        assert isinstance(refused, str) and refused.startswith("exit 2")
        assert f"{setting_flag(name)}={bad!r}" in refused
    with pytest.raises(ConfigurationError, match=f"^invalid worker settings: {name}='{bad}'"):
        bad_keyword: dict[str, Any] = {name: bad}
        Worker({"one": one}, URL, **bad_keyword)
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ConfigurationError, match=f"{variable}='{bad}'"):
        Worker({"one": one}, URL)
    with pytest.raises(ConfigurationError, match=f"{variable}='{bad}'"):
        PgFlow()
    refused = cli_settings([])
    assert isinstance(refused, str) and f"{variable}={bad!r}" in refused


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency=0: Input should be greater than or equal to 1"),
        ({"prefetch": 0}, "prefetch=0: Input should be greater than or equal to 1"),
        ({"shutdown_timeout": 0}, "shutdown_timeout=0: Input should be greater than 0"),
        ({"stalled_after": 5.0}, r"stalled_after \(5 s\) must exceed heartbeat_interval \(5 s\)"),
        ({"retention": "-1h"}, "retention='-1h': not a duration"),
        ({"retention_interval": 0}, "retention_interval=0: Input should be greater than 0"),
    ],
)
def test_bad_keywords_say_what_is_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Worker({"one": one}, URL, **options)


def test_an_unknown_keyword_is_a_type_error_or_names_the_setting() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*gevent"):
        Worker({"one": one}, URL, gevent=True)
    with pytest.raises(ConfigurationError, match="gevent: no such setting"):
        WorkerSettings.load(gevent=True)


def test_keywords_win_over_the_environment_and_settings_over_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGFLOW_WORKER_CONCURRENCY", "3")
    assert Worker({"one": one}, URL).concurrency == 3
    assert Worker({"one": one}, URL, concurrency=5).concurrency == 5
    given = WorkerSettings(concurrency=2, pool="asyncio")
    worker = Worker({"one": one}, URL, given, prefetch=9)  # settings as given: no environment
    assert (worker.concurrency, worker.pool_kind, worker.prefetch) == (2, "asyncio", 9)
    app = PgFlow(concurrency=6, stalled_after=40)
    assert (app.settings.worker.concurrency, app.settings.worker.stalled_after) == (6, 40.0)
    # The app's worker settings: whole, or as a mapping read over the environment.
    assert PgFlow(worker=given, concurrency=7).settings.worker == given.replace(concurrency=7)
    assert PgFlow(worker={"pool": "processes"}).settings.worker.concurrency == 3
    with pytest.raises(ConfigurationError, match="concurrency='x'"):
        PgFlow(concurrency="x")


def test_the_old_variables_still_work_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    for old, name in DEPRECATED_ENV.items():
        value = 2.0 if name == "heartbeat_interval" else 61.0  # below / above the other default
        monkeypatch.setenv(old, str(value))
        with pytest.warns(FutureWarning, match=f"{old} is deprecated.*{WORKER_ENV_PREFIX}"):
            assert getattr(Settings.load().worker, name) == value
        newer = value + 1
        monkeypatch.setenv(WORKER_ENV_PREFIX + name.upper(), str(newer))  # the new name wins
        assert getattr(WorkerSettings.load(), name) == newer
        monkeypatch.delenv(old)
        monkeypatch.delenv(WORKER_ENV_PREFIX + name.upper())


def test_the_worker_command_hands_its_settings_to_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgflow_kombu.cli import cli

    seen: list[WorkerSettings] = []

    def fake_run(url: str, settings: WorkerSettings, **options: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr("pgflow_kombu.worker.command.run_command", fake_run)
    monkeypatch.setenv("PGFLOW_DATABASE_URL", "postgresql://x/y")  # restored after the test
    args = ["--database-url", "postgresql://x/y", "worker", "-A", "pkg:app", "-c", "3"]
    env = {"PGFLOW_WORKER_STALLED_AFTER": "45", "PGFLOW_WORKER_SCHEDULER": "off"}
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert (seen[0].concurrency, seen[0].stalled_after, seen[0].scheduler) == (3, 45.0, False)
    refused = CliRunner().invoke(cli, [*args, "--stalled-after", "2"], env=env)
    assert refused.exit_code == 2 and "must exceed heartbeat_interval" in refused.output
