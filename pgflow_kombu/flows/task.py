"""Tasks: Celery-style jobs, each a flow of one step.

::

    @task(max_attempts=5, timeout=30)
    def send_email(to: str, subject: str) -> dict: ...

    send_email("a@b.c", "hi")                      # a plain call, in this process
    send_email.delay("a@b.c", subject="hi")         # a run of flow 'send_email' (needs an app)
    send_email.apply_async(kwargs={...}, countdown=60)

Naming, which other pgflow workers see and which must stay stable: the flow slug is the task's
``name`` (by default :func:`slug_from_name` of the function's ``__name__``) and its only step has
the same slug, so the run output is ``{name: <return value>}``. Rename the function but keep
``name=`` to keep the flow.

Arguments become the run input, a JSON object: every argument bound by ``inspect.signature``
(positional ones too) is stored under its parameter's name, converted by its type hint (models
become objects); a ``*args`` parameter is stored as an array under its name, ``**kwargs`` entries
as keys of their own. Defaults are not stored, so the worker applies the function's defaults.
The worker turns the object back into the same call. Other clients start the task by sending
such an object, e.g. ``{"to": "a@b.c", "subject": "hi"}``.

A task's ``max_attempts``/``base_delay``/``timeout`` are its flow's options; ``start_delay`` is
its step's; its limits (``max_concurrency``, ``rate_limit``, ``concurrency_key``, ``priority``)
are its flow's. In a chain they become the options of the task's step.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from typing_extensions import Unpack

from pgflow_kombu.errors import FlowDefinitionError, StepInputError
from pgflow_kombu.flows.binding import KwargsBinder
from pgflow_kombu.flows.dispatch import Dispatcher, check_schedule
from pgflow_kombu.flows.flow import Flow
from pgflow_kombu.flows.handler import Handler
from pgflow_kombu.flows.jsondata import Json
from pgflow_kombu.flows.keywords import (
    FlowKeywords,
    TaskKeywords,
    check_keywords,
    pick,
    step_options_of,
)
from pgflow_kombu.flows.slugs import slug_from_name, validate_flow_slug

if TYPE_CHECKING:
    from pgflow_kombu.flows.chain import Chain, ChainItem, Signature

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function plus options, runnable as the single-step flow :attr:`flow`.

    Calling the task calls the function. :meth:`delay` and :meth:`apply_async` start a run
    through the dispatcher the app binds (:meth:`bind`).
    """

    # Copied from the function by functools.update_wrapper.
    __name__: str
    __qualname__: str

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        **options: Unpack[TaskKeywords],
    ) -> None:
        check_keywords(options, TaskKeywords, "Task()")
        if name is None:
            fn_name = getattr(fn, "__name__", None)
            if not isinstance(fn_name, str):
                raise FlowDefinitionError(f"{fn!r} has no __name__: pass name=... explicitly")
            name = slug_from_name(fn_name)
        functools.update_wrapper(self, fn)  # first, so our attributes win over fn.__dict__
        self.name: str = validate_flow_slug(name)
        self.fn = fn
        self.options = step_options_of(options).validate(self.name, self.name)
        flow_keywords = pick(options, FlowKeywords)
        schedule = flow_keywords.pop("schedule", None)  # added below, once the task can run
        self.flow = Flow(self.name, **flow_keywords)
        self.handler = Handler(fn, flow_slug=self.name, step_slug=self.name)
        self.flow.add_step(
            self.name,
            self.handler,
            binder=KwargsBinder(self.handler.input_signature),
            start_delay=options.get("start_delay"),
        )
        self.flow._input_builder = self.build_input
        if schedule is not None:
            self._check_no_arguments("schedule=")
            self.flow.add_schedule(schedule)

    def _check_no_arguments(self, what: str) -> None:
        try:
            self.build_input()
        except StepInputError as exc:
            raise FlowDefinitionError(
                f"task {self.name!r}: {what} starts it with no arguments, but {exc}; use "
                f"app.schedule({self.name}, cron=..., input={{...}}) to give them",
                flow_slug=self.name,
            ) from None

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"

    @property
    def slug(self) -> str:
        """Slug of the task's flow (and queue): the same as :attr:`name`."""
        return self.name

    @property
    def step_slug(self) -> str:
        """Slug of the task's one step (the same as :attr:`name`)."""
        return self.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly, in this process (no validation, no run)."""
        return self.fn(*args, **kwargs)

    # -- dispatch ------------------------------------------------------------------------------

    def bind(self, dispatcher: Dispatcher | None) -> None:
        """Attach the app's dispatcher to the task's flow."""
        self.flow.bind(dispatcher)

    def build_input(self, *args: Any, **kwargs: Any) -> dict[str, Json]:
        """The run input (a JSON object) for a call with these arguments (see module doc).

        Raises :class:`StepInputError` naming the parameter when an argument is missing,
        unexpected, of the wrong type or not JSON.
        """
        sig = self.handler.input_signature
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise StepInputError(
                f"flow {self.name!r} step {self.name!r}: arguments do not fit "
                f"{self.handler.name}(): {exc}",
                flow_slug=self.name,
                step_slug=self.name,
            ) from exc
        data: dict[str, Json] = {}
        for param_name, value in bound.arguments.items():
            kind = sig.parameters[param_name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                data[param_name] = [self.handler.dump_argument(param_name, v) for v in value]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                for key, item in value.items():
                    data[key] = self.handler.dump_argument(param_name, item)
            else:
                data[param_name] = self.handler.dump_argument(param_name, value)
        return data

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Start a run now with these arguments; returns the app's run handle, whose ``get()``
        gives the function's return value (as JSON), as Celery's ``AsyncResult.get()`` does
        (``.output`` is the run output ``{name: value}``)."""
        return self.flow.start(self.build_input(*args, **kwargs))

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Start a run, optionally ``countdown`` seconds from now or at ``eta`` (not both);
        ``priority`` overrides the task's default (higher first).

        With ``idempotency_key`` a second call with the same key returns the first run's handle
        and starts nothing (see :meth:`Client.start_flow`). The handle is :meth:`delay`'s.
        """
        check_schedule(countdown, eta)
        data = self.build_input(*(args or ()), **dict(kwargs or {}))
        return self.flow.start(
            data,
            delay_seconds=countdown,
            scheduled_at=eta,
            priority=priority,
            idempotency_key=idempotency_key,
        )

    def output_of(self, run_output: Json) -> Json:
        """The task's return value (as JSON) inside its run's output ``{name: value}``."""
        if not isinstance(run_output, dict) or self.name not in run_output:
            raise KeyError(f"run output {run_output!r} has no key {self.name!r}")
        return run_output[self.name]

    def run_eager(self, *args: P.args, **kwargs: P.kwargs) -> Json:
        """Run the task as a worker would (JSON input, validation, JSON output), in-process.

        Returns the task's output (unwrapped from the run output).
        """
        return self.output_of(self.flow.run_eager(self.build_input(*args, **kwargs)))

    # -- chaining (see chain.py) ---------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A chain member calling this task with extra arguments after the piped-in value."""
        from pgflow_kombu.flows.chain import Signature

        return Signature(self, tuple(args), dict(kwargs))

    def map(self, *args: Any, **kwargs: Any) -> Signature:
        """A chain member running this task once per element of its predecessor's output."""
        from pgflow_kombu.flows.chain import Signature

        return Signature(self, tuple(args), dict(kwargs), is_map=True)

    def __rshift__(self, other: ChainItem) -> Chain:
        from pgflow_kombu.flows.chain import Chain

        return Chain.of(self) >> other

    def __rrshift__(self, other: ChainItem) -> Chain:
        from pgflow_kombu.flows.chain import Chain

        return Chain.of(other) >> self


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    **options: Unpack[TaskKeywords],
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    **options: Unpack[TaskKeywords],
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Decorator making a :class:`Task` (unbound; the app's ``app.task`` also binds it).

    ``schedule`` (a cron expression) starts the task with no arguments at every tick."""

    def decorate(func: Callable[P, R]) -> Task[P, R]:
        return Task(func, name=name, **options)

    return decorate(fn) if fn is not None else decorate
