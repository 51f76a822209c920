"""Finding the flows a worker serves from an import reference (``-A pkg.module:app``)."""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.task import Task
from pgflow_kombu.observability.hooks import Hooks

__all__ = ["HasFlows", "HasHooks", "flows_of", "hooks_of", "load_flows", "load_target"]


def load_target(ref: str) -> Any:
    """Import ``"pkg.module:attr"`` (attr may be dotted) or ``"pkg.module"``.

    A bare module reference yields its ``app`` attribute when it has one, else the module.
    The current directory is importable, as with ``python -m``.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name:
        raise ConfigurationError(f"-A {ref!r}: expected 'pkg.module:app'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    target: Any = import_app_module(ref, module_name)
    if not attr:
        return getattr(target, "app", target)
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"-A {ref!r}: {module_name!r} has no {attr!r}") from None
    return target


def import_app_module(ref: str, module_name: str) -> ModuleType:
    """Import the module of ``-A ref``; a failure is one :class:`ConfigurationError` line.

    When the module exists but its own code raised, the user's traceback is printed to stderr
    first: the one-line error then names the module and the exception.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            # the module (or a package on its path) does not exist: no traceback to show
            raise ConfigurationError(f"-A {ref!r}: cannot import {module_name!r}: {exc}") from exc
        traceback.print_exc()
        raise ConfigurationError(
            f"-A {ref!r}: importing {module_name!r} failed with {type(exc).__name__}: {exc} "
            "(traceback above)"
        ) from exc
    except Exception as exc:
        traceback.print_exc()
        raise ConfigurationError(
            f"-A {ref!r}: importing {module_name!r} raised {type(exc).__name__}: {exc} "
            "(traceback above)"
        ) from exc


@runtime_checkable
class HasFlows(Protocol):
    """An app: an object holding flows by slug (:class:`~pgflow_kombu.PgFlow` is one)."""

    flows: Mapping[str, Flow]


@runtime_checkable
class HasHooks(Protocol):
    """An app with callbacks for its workers (:class:`~pgflow_kombu.PgFlow` is one)."""

    hooks: Hooks


def hooks_of(target: object) -> Hooks | None:
    """The hooks of the ``-A`` target when it is an app that has some."""
    if isinstance(target, HasHooks) and isinstance(target.hooks, Hooks):
        return target.hooks
    return None


def flows_of(target: Any) -> dict[str, Flow]:
    """The flows behind an app (``.flows``), a mapping, a flow, a task, a module or a list."""
    flows: dict[str, Flow] = {}

    def add(flow: Flow) -> None:
        known = flows.get(flow.slug)
        if known is not None and known is not flow:
            raise ConfigurationError(f"two different flows are named {flow.slug!r}")
        flows[flow.slug] = flow

    def visit(item: Any, depth: int = 0) -> None:
        if isinstance(item, Flow):
            add(item)
        elif isinstance(item, Task):
            add(item.flow)
        elif isinstance(item, Mapping):
            for value in item.values():
                visit(value, depth + 1)
        elif isinstance(item, ModuleType):
            for value in vars(item).values():
                if isinstance(value, (Flow, Task)):
                    visit(value, depth + 1)
        elif depth == 0 and isinstance(item, HasFlows) and isinstance(item.flows, Mapping):
            visit(item.flows, depth + 1)
        elif depth == 0 and isinstance(item, Iterable) and not isinstance(item, (str, bytes)):
            for value in item:
                visit(value, depth + 1)
        elif depth == 0:
            raise ConfigurationError(
                f"{item!r} is not an app, a flow, a task or a collection of them"
            )

    visit(target)
    return flows


def load_flows(ref: str) -> dict[str, Flow]:
    """The flows found at ``ref``; :class:`ConfigurationError` when there are none."""
    flows = flows_of(load_target(ref))
    if not flows:
        raise ConfigurationError(f"-A {ref!r}: no flows or tasks found there")
    return flows
