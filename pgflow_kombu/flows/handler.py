"""A handler function seen through its signature: parameters, type hints, validation.

:class:`Handler` is built once per step. It resolves the function's type hints (postponed
annotations included), builds one pydantic ``TypeAdapter`` per annotated parameter and one for the
return value, and then validates arguments before a call and the return value after it. A
parameter without a hint, or hinted ``Any``/``object``, takes any JSON value; an output without a
hint must still be JSON (see :func:`to_json`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic.errors import PydanticSchemaGenerationError, PydanticUndefinedAnnotation

from pgflow_kombu.errors import FlowDefinitionError, StepInputError, StepOutputError
from pgflow_kombu.flows.context import StepContext
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json

__all__ = ["Handler"]

_EMPTY = inspect.Parameter.empty
_UNTYPED: tuple[object, ...] = (_EMPTY, Any, object)


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine: async functions, also behind wrappers
    (``functools.wraps``, tasks) and callable objects with an async ``__call__``."""
    candidates = [fn, inspect.unwrap(fn), getattr(fn, "__call__", None)]  # noqa: B004
    return any(c is not None and inspect.iscoroutinefunction(c) for c in candidates)


def type_label(annotation: Any) -> str:
    """A short readable name for a type hint: ``list[Item]``, not its dotted repr."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__qualname__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", repr(annotation))


def _format_errors(exc: ValidationError, root: str) -> tuple[str, str]:
    """Render a pydantic error as ``(field, text)``; ``field`` is the dotted path of the first."""
    errors = exc.errors(include_url=False)
    parts = []
    first_field = root
    for i, err in enumerate(errors[:5]):
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{root}.{loc}" if loc and root else (loc or root)
        if i == 0:
            first_field = field
        parts.append(f"{field}: {err['msg']}" if field else err["msg"])
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return first_field, "; ".join(parts)


class Handler:
    """The function behind a step plus what its signature says about inputs and output.

    ``flow_slug`` and ``step_slug`` only serve error messages. Type hints that cannot be resolved
    yet (a model defined later in the module) are resolved on first use.
    """

    def __init__(self, fn: Callable[..., Any], *, flow_slug: str, step_slug: str) -> None:
        if not callable(fn):
            raise FlowDefinitionError(
                f"flow {flow_slug!r} step {step_slug!r}: handler {fn!r} is not callable",
                flow_slug=flow_slug,
                step_slug=step_slug,
            )
        self.fn = fn
        self.flow_slug = flow_slug
        self.step_slug = step_slug
        self.is_async = _is_async(fn)
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise self._definition_error(f"cannot inspect the handler's signature: {exc}") from exc
        self._resolved: inspect.Signature | None = None
        self._adapters: dict[str, TypeAdapter[Any] | None] = {}
        self._output_adapter: TypeAdapter[Any] | None = None
        self.context_param = self._find_context_param()
        try:
            self._resolve()
        except FlowDefinitionError as exc:
            if not isinstance(exc.__cause__, (NameError, PydanticUndefinedAnnotation)):
                raise
            # A forward reference: try again when the handler first runs.

    # -- introspection -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The function's ``__name__`` (or its class name for callable objects)."""
        return str(getattr(self.fn, "__name__", type(self.fn).__name__))

    @property
    def parameters(self) -> list[inspect.Parameter]:
        """Parameters that carry input: all but the :class:`StepContext` one."""
        return [p for p in self.signature.parameters.values() if p.name != self.context_param]

    @property
    def input_signature(self) -> inspect.Signature:
        """The signature without the :class:`StepContext` parameter (what callers can pass)."""
        return self.signature.replace(parameters=self.parameters)

    def _find_context_param(self) -> str | None:
        found = None
        for p in self.signature.parameters.values():
            ann = p.annotation
            is_ctx = ann is StepContext or (
                isinstance(ann, str) and ann.rsplit(".", 1)[-1] == "StepContext"
            )
            if is_ctx:
                if found is not None:
                    raise self._definition_error("more than one parameter is a StepContext")
                if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    raise self._definition_error(
                        f"the StepContext parameter {p.name!r} must be passable by keyword"
                    )
                found = p.name
        return found

    def _definition_error(self, message: str) -> FlowDefinitionError:
        return FlowDefinitionError(
            f"flow {self.flow_slug!r} step {self.step_slug!r}: {message}",
            flow_slug=self.flow_slug,
            step_slug=self.step_slug,
        )

    def _resolve(self) -> inspect.Signature:
        if self._resolved is not None:
            return self._resolved
        try:
            sig = inspect.signature(self.fn, eval_str=True)
        except Exception as exc:  # NameError for a missing name, anything from a bad string
            raise self._definition_error(
                f"cannot resolve the type hints of {self.name!r}: {exc}"
            ) from exc
        adapters: dict[str, TypeAdapter[Any] | None] = {}
        for p in sig.parameters.values():
            if p.name == self.context_param:
                continue
            adapters[p.name] = self._adapter(p.annotation, f"parameter {p.name!r}")
        output = self._adapter(sig.return_annotation, "the return value")
        self._adapters, self._output_adapter, self._resolved = adapters, output, sig
        return sig

    def _adapter(self, annotation: Any, what: str) -> TypeAdapter[Any] | None:
        if any(annotation is u for u in _UNTYPED):
            return None
        try:
            return TypeAdapter(annotation)
        except PydanticUndefinedAnnotation as exc:
            raise self._definition_error(f"cannot resolve the type hint of {what}: {exc}") from exc
        except PydanticSchemaGenerationError as exc:
            raise self._definition_error(
                f"the type hint {annotation!r} of {what} cannot be validated: pydantic does not "
                f"support it"
            ) from exc

    # -- calls ---------------------------------------------------------------------------------

    def _input_error(self, message: str, field: str | None) -> StepInputError:
        return StepInputError(
            f"flow {self.flow_slug!r} step {self.step_slug!r}: {message}",
            flow_slug=self.flow_slug,
            step_slug=self.step_slug,
            field=field,
        )

    def _validate_value(self, name: str, value: Any, label: str) -> Any:
        adapter = self._adapters.get(name)
        if adapter is None:
            return value
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            field, text = _format_errors(exc, label)
            raise self._input_error(f"invalid input {text}", field) from exc

    def validate_call(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        context: StepContext | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Check raw arguments against the signature and hints; return the validated call.

        Values are converted by their hints (a dict becomes the annotated model). The context,
        when the handler wants one, is added here. Raises :class:`StepInputError` naming the
        parameter (and the path inside it) that does not fit.
        """
        sig = self._resolve()
        call_kwargs = dict(kwargs)
        if self.context_param is not None:
            call_kwargs[self.context_param] = context or StepContext(
                flow_slug=self.flow_slug, step_slug=self.step_slug
            )
        try:
            bound = sig.bind(*args, **call_kwargs)
        except TypeError as exc:
            missing = str(exc).split("'")
            field = missing[1] if len(missing) > 2 else None
            raise self._input_error(f"input does not fit {self.name}(): {exc}", field) from exc
        for name, value in list(bound.arguments.items()):
            if name == self.context_param:
                continue
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[name] = tuple(
                    self._validate_value(name, v, f"{name}[{i}]") for i, v in enumerate(value)
                )
            elif kind is inspect.Parameter.VAR_KEYWORD:
                bound.arguments[name] = {
                    k: self._validate_value(name, v, k) for k, v in value.items()
                }
            else:
                bound.arguments[name] = self._validate_value(name, value, name)
        return bound.args, bound.kwargs

    def dump_output(self, value: Any) -> Json:
        """Validate a return value against the return hint and convert it to JSON.

        Raises :class:`StepOutputError` when it does not fit the hint or is not JSON.
        """
        self._resolve()
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never awaited: avoid the "was never awaited" warning
            raise StepOutputError(
                f"flow {self.flow_slug!r} step {self.step_slug!r}: the handler returned an "
                "awaitable; await it before finishing (the call was async)",
                flow_slug=self.flow_slug,
                step_slug=self.step_slug,
            )
        adapter = self._output_adapter
        try:
            if adapter is not None:
                try:
                    value = adapter.dump_python(adapter.validate_python(value), mode="json")
                except ValidationError as exc:
                    field, text = _format_errors(exc, "")
                    raise StepOutputError(
                        f"flow {self.flow_slug!r} step {self.step_slug!r}: output does not match "
                        f"the return type {self._return_hint()}: {text}",
                        flow_slug=self.flow_slug,
                        step_slug=self.step_slug,
                        field=field or None,
                    ) from exc
            return to_json(value)
        except (NotJsonError, ValueError, TypeError) as exc:
            path = exc.path if isinstance(exc, NotJsonError) else "$"
            raise StepOutputError(
                f"flow {self.flow_slug!r} step {self.step_slug!r}: output is not JSON: {exc}",
                flow_slug=self.flow_slug,
                step_slug=self.step_slug,
                field=path,
            ) from exc

    def _return_hint(self) -> str:
        return type_label(self._resolve().return_annotation)

    def dump_argument(self, name: str, value: Any) -> Json:
        """Validate one caller-side argument by its hint and convert it to JSON (for dispatch).

        Raises :class:`StepInputError` naming the parameter when it does not fit or is not JSON.
        """
        self._resolve()
        adapter = self._adapters.get(name)
        try:
            if adapter is not None:
                value = adapter.dump_python(self._validate_value(name, value, name), mode="json")
            return to_json(value)
        except NotJsonError as exc:
            field = name if exc.path == "$" else name + exc.path[1:]
            raise self._input_error(f"argument {name!r} is not JSON: {exc.reason}", field) from exc
        except (ValueError, TypeError) as exc:
            raise self._input_error(f"argument {name!r} is not JSON: {exc}", name) from exc
