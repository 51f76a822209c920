"""flows/ is pure: no database, broker or worker imports, so a flow is data testable anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgflow_kombu.flows as flows_pkg

FLOWS_DIR = Path(flows_pkg.__file__).parent
FORBIDDEN = (
    "psycopg",
    "psycopg_pool",
    "kombu",
    "celery",
    "pgmq",
    "pgflow_kombu.db",
    "pgflow_kombu.transport",
    "pgflow_kombu.worker",
    "pgflow_kombu.client",
    "pgflow_kombu.app",
    "pgflow_kombu.app_base",
    "pgflow_kombu.app_flows",
    "pgflow_kombu.app_runs",
    "pgflow_kombu.app_schedules",
    "pgflow_kombu.app_workers",
    "pgflow_kombu.cli",
    "pgflow_kombu.cli_base",
    "pgflow_kombu.cli_db",
    "pgflow_kombu.cli_flows",
    "pgflow_kombu.cli_runs",
    "pgflow_kombu.cli_schedules",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(FLOWS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    bad = {
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_public_api_is_exported() -> None:
    for name in flows_pkg.__all__:
        assert hasattr(flows_pkg, name), name
    assert sorted(flows_pkg.__all__) == sorted(set(flows_pkg.__all__))
