"""A flow: a named DAG of steps, built with decorators and checked as it is built.

::

    order = Flow("process_order", max_attempts=3)

    @order.step
    def validate(run: OrderIn) -> Validated: ...        # root step: gets the run input

    @order.step
    def charge(validate: Validated) -> list[Item]: ...  # depends on validate (parameter name)

    @order.map(over="charge")
    def ship(item: Item) -> Shipment: ...               # one task per element of charge's output

    @order.step(depends_on=["ship", "validate"])
    def notify(ship: list[Shipment], validate: Validated) -> None: ...

Decorators return the function unchanged, so it stays callable in tests. Every mistake (bad slug,
unknown dependency, duplicate step, a parameter that names nothing, options out of range) raises
:class:`FlowDefinitionError` at once, naming the flow and the step. A dependency must be defined
before the steps that use it, which also rules out cycles; ``Step.index`` is the definition order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, overload

from typing_extensions import Unpack

from pgflow_kombu.errors import (
    ConfigurationError,
    FlowDefinitionError,
    FlowInputError,
    NotBoundError,
)
from pgflow_kombu.flows.binding import RUN_KEY, Binder
from pgflow_kombu.flows.conditions import StepCondition
from pgflow_kombu.flows.dispatch import Dispatcher, check_schedule
from pgflow_kombu.flows.handler import Handler
from pgflow_kombu.flows.inference import check_element_handler, infer_named_binder
from pgflow_kombu.flows.inputs import check_root_map_input
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json
from pgflow_kombu.flows.keywords import (
    FlowKeywords,
    StepKeywords,
    check_keywords,
    flow_options_of,
    limits_of,
    step_options_of,
)
from pgflow_kombu.flows.options import FLOW_OPTION_NAMES
from pgflow_kombu.flows.schedules import CatchUp, ScheduleSpec
from pgflow_kombu.flows.shapes import FlowShape
from pgflow_kombu.flows.slugs import validate_flow_slug, validate_step_slug
from pgflow_kombu.flows.step import STEP_TYPES, Step, StepType

__all__ = ["Flow", "define_flow"]

F = TypeVar("F", bound=Callable[..., Any])


class Flow:
    """A flow definition: slug, options and steps in definition order.

    Options not given are not set: ``pgflow.create_flow`` applies its defaults (3 attempts,
    5 s base delay, 60 s timeout) and steps inherit the flow's values. ``schedule`` (a cron
    expression) starts a run with input ``{}`` at every tick; see :meth:`add_schedule`.
    """

    def __init__(self, slug: str, **options: Unpack[FlowKeywords]) -> None:
        check_keywords(options, FlowKeywords, "Flow()")
        self.slug: str = validate_flow_slug(slug)
        self.options = flow_options_of(options).validate(self.slug)
        self.limits = limits_of(options, options.get("priority")).validate(
            f"flow {self.slug!r}", flow=True
        )
        schedule = options.get("schedule")
        self._steps: dict[str, Step] = {}
        # Cron schedules of this flow, written to the database by the workers that serve it.
        self.schedules: list[ScheduleSpec] = []
        if schedule is not None:
            self.add_schedule(schedule)
        self._dispatcher: Dispatcher | None = None
        # Turns delay(*args, **kwargs) into the run input; set for task and chain flows.
        self._input_builder: Callable[..., Json] | None = None

    def __repr__(self) -> str:
        return f"<Flow {self.slug!r} steps={list(self._steps)!r}>"

    # -- the DAG -------------------------------------------------------------------------------

    @property
    def steps(self) -> tuple[Step, ...]:
        """All steps in definition order (pgflow's ``step_index`` order)."""
        return tuple(self._steps.values())

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps.values())

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, step_slug: object) -> bool:
        return step_slug in self._steps

    def get_step(self, step_slug: str) -> Step:
        """The step named ``step_slug``; :class:`FlowDefinitionError` if there is none."""
        try:
            return self._steps[step_slug]
        except KeyError:
            raise FlowDefinitionError(
                f"flow {self.slug!r} has no step {step_slug!r} (steps: {list(self._steps)})",
                flow_slug=self.slug,
                step_slug=step_slug,
            ) from None

    def resolved_options(self, step_slug: str) -> dict[str, int]:
        """A step's effective ``max_attempts``, ``base_delay``, ``timeout``, ``start_delay``.

        Step value, else flow value, else ``create_flow``'s default: what pgflow's SQL applies,
        and what a worker needs to enforce the timeout of a task.
        """
        return self.get_step(step_slug).options.resolve(self.options)

    def dependents(self, step_slug: str) -> tuple[str, ...]:
        """Slugs of the steps that depend directly on ``step_slug``, in definition order."""
        return tuple(s.slug for s in self._steps.values() if step_slug in s.deps)

    @property
    def leaves(self) -> tuple[str, ...]:
        """Slugs of steps no other step depends on: their outputs form the run's output."""
        used = {d for s in self._steps.values() for d in s.deps}
        return tuple(slug for slug in self._steps if slug not in used)

    def _error(self, step_slug: str | None, message: str) -> FlowDefinitionError:
        where = f"flow {self.slug!r}" + (f" step {step_slug!r}" if step_slug else "")
        return FlowDefinitionError(f"{where}: {message}", flow_slug=self.slug, step_slug=step_slug)

    def add_step(
        self,
        slug: str,
        handler: Callable[..., Any] | Handler | None = None,
        *,
        depends_on: Sequence[str] | None = None,
        step_type: StepType = "single",
        binder: Binder | None = None,
        **options: Unpack[StepKeywords],
    ) -> Step:
        """Add a step; the general form behind the decorators and data-defined flows.

        ``handler`` is the function (or a prepared :class:`Handler`). With one and no ``binder``
        the binder is inferred from the signature (see :mod:`pgflow_kombu.flows.inference`); for
        a single step given without ``depends_on`` the dependencies are inferred too. A map step has at most one dependency (none: it maps
        over the run input). ``if_``, ``if_not``, ``when_unmet`` and ``when_exhausted`` make it
        conditional (see :mod:`~pgflow_kombu.flows.conditions`). Returns the new :class:`Step`.
        """
        check_keywords(options, StepKeywords, "add_step()")
        slug = validate_step_slug(slug, flow_slug=self.slug)
        if slug in self._steps:
            raise self._error(slug, "a step with this slug is already defined")
        if step_type not in STEP_TYPES:
            raise self._error(slug, f"step_type must be 'single' or 'map', got {step_type!r}")
        if isinstance(depends_on, str):
            raise self._error(
                slug, f"depends_on must be a list of slugs, not the string {depends_on!r}"
            )
        step_opts = step_options_of(options).validate(self.slug, slug)
        step_limits = limits_of(options).validate(f"flow {self.slug!r} step {slug!r}", flow=False)
        if handler is None or isinstance(handler, Handler):
            spec = handler
        else:
            spec = Handler(handler, flow_slug=self.slug, step_slug=slug)
        deps = self._check_deps(slug, depends_on)
        if step_type == "map" and len(deps) > 1:
            raise self._error(
                slug,
                f"a map step can have at most one dependency (the array it maps over), got "
                f"{len(deps)}: {', '.join(deps)}",
            )
        if spec is not None and binder is None:
            if step_type == "map":
                binder = check_element_handler(spec)
            else:
                binder, inferred = infer_named_binder(spec, list(self._steps), depends_on)
                deps = inferred
        condition = StepCondition.build(
            flow_slug=self.slug,
            step_slug=slug,
            deps=deps,
            if_=options.get("if_"),
            if_not=options.get("if_not"),
            when_unmet=options.get("when_unmet"),
            when_exhausted=options.get("when_exhausted"),
        )
        step = Step(
            self.slug,
            slug,
            len(self._steps),
            deps,
            step_type,
            step_opts,
            spec,
            binder,
            condition,
            step_limits,
        )
        self._steps[slug] = step
        return step

    def _check_deps(self, slug: str, depends_on: Sequence[str] | None) -> tuple[str, ...]:
        deps = tuple(depends_on or ())
        seen: set[str] = set()
        for dep in deps:
            if dep == slug:
                raise self._error(slug, "a step cannot depend on itself")
            if dep == RUN_KEY:
                raise self._error(
                    slug, "'run' is the flow input, not a step; leave it out of depends_on"
                )
            if dep in seen:
                raise self._error(slug, f"dependency {dep!r} is listed twice")
            seen.add(dep)
            if dep not in self._steps:
                raise self._error(
                    slug,
                    f"depends on unknown step {dep!r} (steps defined so far: "
                    f"{', '.join(self._steps) or 'none'}); define it first",
                )
        return deps

    # -- decorators ----------------------------------------------------------------------------

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[str] | None = None,
        **options: Unpack[StepKeywords],
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        slug: str | None = None,
        depends_on: Sequence[str] | None = None,
        **options: Unpack[StepKeywords],
    ) -> Any:
        """Decorator adding a single step; the slug is the function's name unless ``slug``.

        Without ``depends_on`` the dependencies are the parameters named after defined steps;
        ``run`` receives the flow input. ``if_`` / ``if_not`` / ``when_unmet`` /
        ``when_exhausted`` make the step conditional (pgflow 0.14's ``if`` / ``ifNot`` /
        ``whenUnmet`` / ``whenExhausted``; see :mod:`~pgflow_kombu.flows.conditions`). A parameter
        for a dependency that may be skipped needs a default: the key is then absent. Returns the
        function unchanged.
        """

        return self._decorate(
            fn,
            slug,
            depends_on=depends_on,
            **options,
        )

    @overload
    def map(self, fn: F, /) -> F: ...

    @overload
    def map(
        self,
        fn: None = None,
        /,
        *,
        over: str | None = None,
        slug: str | None = None,
        **options: Unpack[StepKeywords],
    ) -> Callable[[F], F]: ...

    def map(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        over: str | None = None,
        slug: str | None = None,
        **options: Unpack[StepKeywords],
    ) -> Any:
        """Decorator adding a map step: one task per element of an array.

        ``over`` names the step whose (array) output is mapped; ``None`` or ``"run"`` maps over
        the run input, which must then be an array. The handler's first parameter receives the
        element. Returns the function unchanged.
        """

        return self._decorate(
            fn,
            slug,
            depends_on=[] if over in (None, RUN_KEY) else [over],
            step_type="map",
            **options,
        )

    def _decorate(self, fn: Callable[..., Any] | None, slug: str | None, **step: Any) -> Any:
        """What :meth:`step` and :meth:`map` return: ``fn`` added as a step named ``slug`` or
        after the function (and returned unchanged), or without ``fn`` a decorator doing so."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add_step(slug or _function_name(func), func, **step)
            return func

        return decorate(fn) if fn is not None else decorate

    # -- flow control ------------------------------------------------------------------------

    def limit_rows(self) -> dict[str, dict[str, Any]]:
        """The flow's and its steps' limits as ``pgflow_kombu.set_flow_limits`` stores them
        (scope ``""`` is the flow); empty when the flow declares none."""
        rows: dict[str, dict[str, Any]] = {}
        if self.limits.active or self.limits.priority is not None:
            rows[""] = self.limits.row(f"flow {self.slug!r}")
        for step in self._steps.values():
            if step.limits.active:
                rows[step.slug] = step.limits.row(f"flow {self.slug!r} step {step.slug!r}")
        return rows

    def run_keys(self, input: Json) -> dict[str, str]:
        """The concurrency keys of a run with this input, by scope (``""`` = the flow)."""
        keys: dict[str, str] = {}
        for scope, limits in [
            ("", self.limits),
            *((s.slug, s.limits) for s in self._steps.values()),
        ]:
            key = limits.key_of(input)
            if key is not None:
                keys[scope] = key
        return keys

    # -- shape ---------------------------------------------------------------------------------

    def shape(self) -> FlowShape:
        """The flow as plain data (what ``create_flow``/``add_step`` receive; see shapes.py)."""
        return {
            "flow_slug": self.slug,
            "options": self.options.as_dict(),
            "steps": [s.shape() for s in self._steps.values()],
        }

    @classmethod
    def from_shape(
        cls, shape: Mapping[str, Any], handlers: Mapping[str, Callable[..., Any]] | None = None
    ) -> Flow:
        """Build a flow from plain data (a :class:`FlowShape`), with the same validation."""
        if "flow_slug" not in shape:
            raise FlowDefinitionError("a flow shape needs a 'flow_slug'")
        options = dict(shape.get("options") or {})
        unknown = set(options) - set(FLOW_OPTION_NAMES)
        if unknown:
            raise FlowDefinitionError(
                f"flow {shape['flow_slug']!r}: unknown options {sorted(unknown)}",
                flow_slug=shape["flow_slug"],
            )
        return define_flow(
            shape["flow_slug"], steps=shape.get("steps", []), handlers=handlers, **options
        )

    # -- schedules -----------------------------------------------------------------------------

    def add_schedule(
        self,
        cron: str,
        *,
        input: Any = None,
        timezone: str = "UTC",
        name: str | None = None,
        catch_up: CatchUp = "none",
        catch_up_limit: int = 100,
        misfire_grace: float = 30.0,
    ) -> ScheduleSpec:
        """Start a run with ``input`` (default ``{}``) at every tick of ``cron`` (see
        :mod:`pgflow_kombu.flows.schedules`); ``name`` (default: the flow slug) must be unique
        among all schedules. Workers serving the flow write it to the database."""
        spec = ScheduleSpec(
            flow_slug=self.slug,
            cron=cron,
            name=name or "",
            input={} if input is None else input,
            timezone=timezone,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            misfire_grace=misfire_grace,
        )
        if any(s.name == spec.name for s in self.schedules):
            raise ConfigurationError(
                f"flow {self.slug!r} already has a schedule named {spec.name!r}: pass name=..."
            )
        self.schedules.append(spec)
        return spec

    # -- starting runs -------------------------------------------------------------------------

    def bind(self, dispatcher: Dispatcher | None) -> None:
        """Attach the app's dispatcher, which :meth:`start` uses (``None`` detaches)."""
        self._dispatcher = dispatcher

    @property
    def dispatcher(self) -> Dispatcher | None:
        """The dispatcher attached by :meth:`bind`, if any."""
        return self._dispatcher

    def prepare_input(self, input: Any) -> Json:
        """Convert a run input to JSON and check it as ``start_flow`` would (root maps)."""
        try:
            data = to_json(input)
        except NotJsonError as exc:
            raise FlowInputError(f"flow {self.slug!r}: the run input is not JSON: {exc}") from exc
        check_root_map_input(self, data)
        return data

    def start(
        self,
        input: Any = None,
        *,
        delay_seconds: float | None = None,
        scheduled_at: datetime | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Start a run through the bound dispatcher; returns its run handle.

        ``input`` may hold models and dataclasses (they become JSON objects); ``priority``
        overrides the flow's default priority. With ``idempotency_key`` a second start with the
        same key returns the first run's handle.
        """
        if self._dispatcher is None:
            raise NotBoundError(
                f"flow {self.slug!r} is not registered with an app: define it with app.flow(...) "
                "or register it, or use run_eager() in tests"
            )
        check_schedule(delay_seconds, scheduled_at)
        # These are passed only when given: dispatchers written before them keep working.
        extra: dict[str, Any] = {} if priority is None else {"priority": priority}
        if idempotency_key is not None:
            extra["idempotency_key"] = idempotency_key
        return self._dispatcher.start(
            self,
            self.prepare_input(input),
            delay_seconds=delay_seconds,
            scheduled_at=scheduled_at,
            **extra,
        )

    def build_input(self, *args: Any, **kwargs: Any) -> Json:
        """The run input for ``delay(*args, **kwargs)``.

        For a task (or a chain starting with tasks) the arguments are bound to its function's
        signature (see ``Task.build_input``); otherwise only keyword arguments are accepted and
        become a JSON object.
        """
        if self._input_builder is not None:
            return self._input_builder(*args, **kwargs)
        if args:
            raise FlowInputError(
                f"flow {self.slug!r}: pass the run input as keyword arguments or use start(input)"
            )
        return self.prepare_input(kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Start a run with :meth:`build_input`'s input (Celery's ``delay``)."""
        return self.start(self.build_input(*args, **kwargs))

    # -- eager execution -----------------------------------------------------------------------

    def run_eager(self, input: Any = None, *, retries: bool = False) -> Json:
        """Run every step in this process (no worker, no database); see :func:`run_eager`."""
        from pgflow_kombu.flows.eager import run_eager

        return run_eager(self, input, retries=retries)

    async def arun_eager(self, input: Any = None, *, retries: bool = False) -> Json:
        """Async form of :meth:`run_eager`, for tests that already run an event loop."""
        from pgflow_kombu.flows.eager import arun_eager

        return await arun_eager(self, input, retries=retries)


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        raise FlowDefinitionError(f"{fn!r} has no __name__: pass slug=... explicitly")
    return name


# Flows from plain data live in definitions.py; re-exported here for existing imports.
from pgflow_kombu.flows.definitions import define_flow  # noqa: E402
