"""The reference pages name every command, option and setting that exists, and the public API
is exactly what they document.

docs/cli.md must mention each command path (``runs start``) and each option of the worker
command; docs/configuration.md each ``Settings`` and ``Liveness`` field with its environment
variable, each ``Worker`` argument, and the worker settings' table exactly as ``WorkerSettings``
renders it. A command or setting added without its documentation fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import pgflow_kombu
from pgflow_kombu.cli import cli
from pgflow_kombu.settings import ENV_PREFIX, WORKER_ENV_PREFIX, Liveness, Settings, WorkerSettings
from pgflow_kombu.worker import Worker
from pgflow_kombu.worker.command import SHORT_FLAGS, default_text, setting_flag

DOCS = Path(__file__).resolve().parents[2] / "docs"

# Worker arguments that are wiring, not settings a user chooses; ``options`` are the
# ``WorkerSettings`` fields (checked against their own table).
WORKER_WIRING = {
    "self",
    "flows",
    "url",
    "app_ref",
    "source",
    "ensure_flows",
    "function_name",
    "options",
}


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path + " ")


def test_every_command_is_in_the_cli_page() -> None:
    page = (DOCS / "cli.md").read_text()
    missing = [path for path, _ in _commands(cli) if f"`{path}" not in page and path not in page]
    assert not missing, f"docs/cli.md does not mention: {missing}"


def test_every_option_of_every_command_is_in_the_cli_page() -> None:
    page = (DOCS / "cli.md").read_text()
    missing = []
    for path, command in [("pgflow-kombu", cli), *_commands(cli)]:
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                longest = max(param.opts, key=len)
                if longest not in page:
                    missing.append(f"{path} {longest}")
    assert not missing, f"docs/cli.md does not mention: {missing}"


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    missing = [
        name
        for model in (Settings, Liveness)
        for name in model.model_fields
        if name != "worker"  # its fields: test_the_worker_settings_table_is_the_model
        if f"`{name}`" not in page or f"`{ENV_PREFIX}{name.upper()}`" not in page
    ]
    assert not missing, f"docs/configuration.md does not list: {missing}"


def test_every_worker_option_is_in_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text()
    options = set(inspect.signature(Worker.__init__).parameters) - WORKER_WIRING
    missing = sorted(name for name in options if f"`{name}`" not in page)
    assert not missing, f"docs/configuration.md does not list worker options: {missing}"


def test_every_public_name_is_in_the_api_reference() -> None:
    page = (DOCS / "api.md").read_text()
    missing = [
        name
        for name in pgflow_kombu.__all__
        if f"::: pgflow_kombu.{name}\n" not in page and f"`{name}`" not in page
    ]
    assert not missing, f"docs/api.md does not document: {missing}"


def worker_settings_table() -> str:
    """The table of docs/configuration.md's worker section, rendered from ``WorkerSettings``."""
    rows = ["| setting | option / env | default | |", "|---|---|---|---|"]
    for name, field in WorkerSettings.model_fields.items():
        flag = setting_flag(name)
        if field.annotation is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        short = f"{SHORT_FLAGS[name]}, " if name in SHORT_FLAGS else ""
        env = f"{WORKER_ENV_PREFIX}{name.upper()}"
        rows.append(
            f"| `{name}` | `{short}{flag}` / `{env}` | {default_text(name)} | {field.description} |"
        )
    return "\n".join(rows) + "\n"


def test_the_worker_settings_table_is_the_model() -> None:
    page = (DOCS / "configuration.md").read_text()
    table = worker_settings_table()
    assert table in page, f"docs/configuration.md: the worker settings table should be\n{table}"


# -- public and private names ----------------------------------------------------------------------

PACKAGE = Path(pgflow_kombu.__file__).resolve().parent


def _modules() -> list[str]:
    """Every module of the package, by dotted name (``__main__`` too)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _source(module: str) -> Path:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _declared_all(module: str) -> list[str] | None:
    """The module's top-level ``__all__`` list, read without importing it."""
    for node in ast.parse(_source(module).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            names = ast.literal_eval(value)
            assert isinstance(names, list), f"{module}.__all__ is not a list"
            return [str(name) for name in names]
    return None


def test_every_module_says_what_it_exports() -> None:
    missing = [m for m in _modules() if _declared_all(m) is None]
    assert not missing, f"modules without __all__: {missing}"


@pytest.mark.parametrize("module", [m for m in _modules() if not m.endswith("__main__")])
def test_every_exported_name_exists(module: str) -> None:
    names = _declared_all(module) or []
    assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
    loaded = importlib.import_module(module)
    undefined = [name for name in names if not hasattr(loaded, name)]
    assert not undefined, f"{module}.__all__ names what it does not define: {undefined}"


def _documented_top_level() -> set[str]:
    """The names docs/api.md documents as ``pgflow_kombu.<name>`` (a ``:::`` entry that is not a
    module) or lists as exported by ``pgflow_kombu`` (the errors paragraph)."""
    page = (DOCS / "api.md").read_text()
    entries = set(re.findall(r"^::: pgflow_kombu\.(\w+)$", page, re.MULTILINE))
    documented = {name for name in entries if not _is_module(f"pgflow_kombu.{name}")}
    also = re.search(r"exported by `pgflow_kombu`:(.*?`)\.", page, re.DOTALL)
    assert also is not None, "docs/api.md no longer lists the errors pgflow_kombu exports"
    return documented | set(re.findall(r"`(\w+)`", also.group(1)))


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def test_the_public_api_is_exactly_what_the_reference_documents() -> None:
    exported, documented = set(pgflow_kombu.__all__), _documented_top_level()
    assert exported == documented, (
        f"exported but not documented in docs/api.md: {sorted(exported - documented)}; "
        f"documented but not exported: {sorted(documented - exported)}"
    )
