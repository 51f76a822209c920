"""Deciding, from a handler's signature, what its step depends on and what each parameter gets.

The rules (all checked when the step is defined):

``@flow.step`` without ``depends_on``
    A parameter named after an already defined step depends on it and receives its output;
    ``run`` receives the flow input; a ``**kwargs`` parameter receives the remaining input keys.
    A step with no dependency whose only required parameter names nothing receives the flow input
    through it (``def validate(order: OrderIn)``), unless the name is a near miss of a defined
    step's slug (``validat``), which is reported as a likely typo. Any other required parameter that names nothing
    is an error; one with a default keeps its default.
``@flow.step(depends_on=[...])``
    The dependencies are the listed steps. Parameters named after them receive their outputs,
    ``run`` the flow input; a single remaining required parameter receives the flow input (no
    dependency) or the only dependency's output. A parameter named after a step that is not listed
    is an error.
``@flow.map(...)``
    The first parameter receives the array element; other parameters need defaults.
A parameter annotated :class:`StepContext` is never an input.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Collection, Sequence

from pgflow_kombu.errors import FlowDefinitionError
from pgflow_kombu.flows.binding import RUN_KEY, ElementBinder, NamedBinder
from pgflow_kombu.flows.handler import Handler

__all__ = ["check_element_handler", "infer_named_binder"]

_P = inspect.Parameter


def _error(handler: Handler, message: str) -> FlowDefinitionError:
    return FlowDefinitionError(
        f"flow {handler.flow_slug!r} step {handler.step_slug!r}: {message}",
        flow_slug=handler.flow_slug,
        step_slug=handler.step_slug,
    )


def _known(known: Collection[str]) -> str:
    return ", ".join(repr(k) for k in known) if known else "none"


def infer_named_binder(
    handler: Handler,
    known_steps: Collection[str],
    depends_on: Sequence[str] | None,
) -> tuple[NamedBinder, tuple[str, ...]]:
    """Return the binder and the dependencies of a single step (see the module rules)."""
    explicit = depends_on is not None
    deps: list[str] = list(depends_on or ())
    sources: dict[str, str] = {}
    positional: list[str] = []
    rest: str | None = None
    unmatched: list[inspect.Parameter] = []
    optional: set[str] = set()

    for p in handler.parameters:
        if p.kind is _P.VAR_KEYWORD:
            rest = p.name
            continue
        if p.kind is _P.VAR_POSITIONAL:
            continue
        if p.name == RUN_KEY:
            key: str | None = RUN_KEY
        elif p.name in deps:
            key = p.name
        elif p.name in known_steps:
            if explicit:
                raise _error(
                    handler,
                    f"parameter {p.name!r} names step {p.name!r}, which is not in depends_on "
                    f"{deps!r}; add it there or rename the parameter",
                )
            deps.append(p.name)
            key = p.name
        else:
            key = None
        if key is None:
            if p.default is _P.empty:
                unmatched.append(p)
            continue
        sources[p.name] = key
        if p.kind is _P.POSITIONAL_ONLY:
            positional.append(p.name)
        elif p.default is not _P.empty:
            optional.add(p.name)

    if unmatched:
        first = unmatched[0]
        fallback: str | None = None
        if len(unmatched) == 1 and RUN_KEY not in sources.values():
            if not deps:
                _refuse_near_miss(handler, first.name, known_steps)
                fallback = RUN_KEY
            elif explicit and len(deps) == 1 and deps[0] not in sources.values():
                fallback = deps[0]
        if fallback is None:
            hint = (
                "name it after a dependency or 'run' for the flow input"
                if explicit
                else "define the step it names first, or name it 'run' for the flow input"
            )
            raise _error(
                handler,
                f"parameter {first.name!r} names no step (steps defined so far: "
                f"{_known(known_steps)}) and is not 'run'; {hint}",
            )
        sources[first.name] = fallback
        if first.kind is _P.POSITIONAL_ONLY:
            positional.append(first.name)

    # Positional-only parameters are passed in signature order.
    order = [p.name for p in handler.parameters]
    positional.sort(key=order.index)
    return NamedBinder(dict(sources), tuple(positional), rest, frozenset(optional)), tuple(deps)


def _refuse_near_miss(handler: Handler, name: str, known_steps: Collection[str]) -> None:
    """A lone parameter spelled almost like a step is a typo, not the run input."""
    close = difflib.get_close_matches(name, list(known_steps), n=1, cutoff=0.8)
    if close:
        raise _error(
            handler,
            f"parameter {name!r} names no step; did you mean {close[0]!r}? (The only parameter "
            "of a step without dependencies receives the flow input: name it 'run' to say so.)",
        )


def check_element_handler(handler: Handler) -> ElementBinder:
    """Check that a map handler takes the element as its first positional parameter."""
    params = [p for p in handler.parameters if p.kind is not _P.VAR_KEYWORD]
    if not params or params[0].kind is _P.KEYWORD_ONLY:
        raise _error(
            handler, "a map handler must take the array element as its first positional parameter"
        )
    first = params[0]
    for p in params[1:]:
        if p.kind is not _P.VAR_POSITIONAL and p.default is _P.empty:
            raise _error(
                handler,
                f"a map handler receives only the element (parameter {first.name!r}); "
                f"parameter {p.name!r} needs a default",
            )
    return ElementBinder()
