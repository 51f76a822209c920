"""Turning a pgflow task input into a handler's call arguments.

``pgflow.start_tasks`` delivers, per task, one JSON input: a single step gets
``{"run": <run input>, "<dep>": <dep output>, ...}``, a map task gets one array element. A binder
knows, for one step, which part of that input each parameter receives. Binders are decided when
the step is defined (so a parameter that names nothing fails then), and return raw values;
:meth:`Handler.validate_call` checks them against the type hints afterwards.

Binders:

* :class:`NamedBinder` - ``@flow.step`` handlers: ``run`` gets the flow input, a parameter named
  after a dependency gets its output, a ``**kwargs`` parameter gets the remaining keys.
* :class:`ElementBinder` - map handlers: the element is the first positional argument.
* :class:`KwargsBinder` - tasks: the run input is an object of keyword arguments.
* :class:`PipeBinder` - chained tasks: the predecessor's output (or, after a fan-out, the list of
  the branches' outputs) is the first positional argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from pgflow_kombu.errors import StepInputError

__all__ = [
    "RUN_KEY",
    "Binder",
    "ElementBinder",
    "KwargsBinder",
    "NamedBinder",
    "PipeBinder",
    "ResultSpec",
]

RUN_KEY = "run"
"""Key of the flow input in a single step's input object (and the parameter name that gets it)."""

ResultSpec: TypeAlias = "str | list[ResultSpec]"
"""Where a chained step's first argument comes from: a step slug, or a list of specs (fan-in)."""

Call: TypeAlias = tuple[list[Any], dict[str, Any]]


class Binder(Protocol):
    """Maps a task input to raw ``(args, kwargs)`` for the handler (before type validation)."""

    def bind(self, task_input: Any, where: StepWhere) -> Call: ...


@dataclass(frozen=True)
class StepWhere:
    """Flow and step names for error messages raised while binding."""

    flow_slug: str
    step_slug: str

    def error(self, message: str, field: str | None = None) -> StepInputError:
        return StepInputError(
            f"flow {self.flow_slug!r} step {self.step_slug!r}: {message}",
            flow_slug=self.flow_slug,
            step_slug=self.step_slug,
            field=field,
        )


def _require_object(task_input: Any, where: StepWhere, what: str) -> Mapping[str, Any]:
    if not isinstance(task_input, Mapping):
        raise where.error(f"{what} must be a JSON object, got {type(task_input).__name__}")
    return task_input


@dataclass(frozen=True)
class NamedBinder:
    """Parameters take input keys: ``sources`` maps a parameter name to the key it reads.

    ``positional`` lists the positional-only parameters in order (they cannot be passed by name);
    ``rest`` is the ``**kwargs`` parameter that receives every key no parameter took, if any.
    ``optional`` names parameters with a default: when their key is absent (a dependency that
    was skipped) they keep the default.
    """

    sources: Mapping[str, str]
    positional: tuple[str, ...] = ()
    rest: str | None = None
    optional: frozenset[str] = frozenset()

    def bind(self, task_input: Any, where: StepWhere) -> Call:
        data = _require_object(task_input, where, "a single step's input")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param, key in self.sources.items():
            if key not in data:
                if param in self.optional:
                    continue
                what = "the flow input" if key == RUN_KEY else f"the output of step {key!r}"
                raise where.error(f"input has no key {key!r} ({what}) for parameter {param!r}", key)
            if param in self.positional:
                args.append(data[key])
            else:
                kwargs[param] = data[key]
        if self.rest is not None:
            taken = set(self.sources.values())
            for key, value in data.items():
                if key not in taken:
                    kwargs[key] = value
        return args, kwargs


@dataclass(frozen=True)
class ElementBinder:
    """Map tasks: the element (the whole task input) is the first positional argument."""

    extra_args: tuple[Any, ...] = ()
    extra_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, task_input: Any, where: StepWhere) -> Call:
        return [task_input, *self.extra_args], dict(self.extra_kwargs)


@dataclass(frozen=True)
class KwargsBinder:
    """Tasks: ``input["run"]`` is a JSON object of keyword arguments (see ``Task.build_input``).

    Keys name parameters; the key of a ``*args`` parameter holds its list; other keys go to
    ``**kwargs`` if the function has one, else they are an error. ``extra_args`` and
    ``extra_kwargs`` come from a chain's ``task.s(...)``.
    """

    signature: inspect.Signature
    extra_args: tuple[Any, ...] = ()
    extra_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, task_input: Any, where: StepWhere) -> Call:
        data = _require_object(task_input, where, "a task step's input")
        if RUN_KEY not in data:
            raise where.error("input has no key 'run' (the flow input)", RUN_KEY)
        run = _require_object(data[RUN_KEY], where, "the flow input of a task (its arguments)")
        return kwargs_to_call(self.signature, run, where, self.extra_args, self.extra_kwargs)


def kwargs_to_call(
    signature: inspect.Signature,
    run: Mapping[str, Any],
    where: StepWhere,
    extra_args: Sequence[Any] = (),
    extra_kwargs: Mapping[str, Any] | None = None,
) -> Call:
    """Turn a keyword-argument object (``Task.build_input``'s output) back into a call."""
    params = list(signature.parameters.values())
    var_pos = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    var_kw = next((p for p in params if p.kind is p.VAR_KEYWORD), None)
    named = {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    star: list[Any] = []
    if var_pos is not None and var_pos.name in run and var_pos.name not in named:
        value = run[var_pos.name]
        if not isinstance(value, list):
            raise where.error(f"field {var_pos.name!r} (*{var_pos.name}) must be an array")
        star = value
    args: list[Any] = list(extra_args)
    kwargs: dict[str, Any] = dict(extra_kwargs or {})
    positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    # With *args values every parameter before them must be passed positionally.
    leading = [p for p in params if p.kind in positional_kinds][len(args) :]
    passed: set[str] = set()
    for p in leading:
        if not star and p.kind is not p.POSITIONAL_ONLY:
            break
        if p.name in run:
            args.append(run[p.name])
        elif p.default is not p.empty:
            args.append(p.default)
        else:
            raise where.error(f"missing field {p.name!r}", p.name)
        passed.add(p.name)
    args.extend(star)
    for key, value in run.items():
        if key in passed or (var_pos is not None and key == var_pos.name and key not in named):
            continue
        if key in named or var_kw is not None:
            kwargs.setdefault(key, value)
        else:
            raise where.error(f"unexpected field {key!r}: no such parameter", key)
    return args, kwargs


def resolve_spec(spec: ResultSpec, data: Mapping[str, Any], where: StepWhere) -> Any:
    """The value a :data:`ResultSpec` names in a single step's input (nested lists for fan-ins)."""
    if isinstance(spec, list):
        return [resolve_spec(s, data, where) for s in spec]
    if spec not in data:
        raise where.error(f"input has no key {spec!r} (the output of step {spec!r})", spec)
    return data[spec]


@dataclass(frozen=True)
class PipeBinder:
    """Chained tasks: the value named by ``spec`` is the first argument, then ``.s()`` extras."""

    spec: ResultSpec
    extra_args: tuple[Any, ...] = ()
    extra_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, task_input: Any, where: StepWhere) -> Call:
        data = _require_object(task_input, where, "a single step's input")
        first = resolve_spec(self.spec, data, where)
        return [first, *self.extra_args], dict(self.extra_kwargs)
