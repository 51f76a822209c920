"""The app's flow definitions: define and register flows and tasks; replace or delete them in the
database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

from typing_extensions import Unpack

from pgflow_kombu.app_base import AppBase
from pgflow_kombu.errors import ConfigurationError
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.keywords import FlowDataKeywords, FlowKeywords, TaskKeywords
from pgflow_kombu.flows.shapes import FlowShape
from pgflow_kombu.types import FlowInfo

if TYPE_CHECKING:
    from pgflow_kombu.flows import Task
    from pgflow_kombu.flows.dispatch import Dispatcher

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["FlowsFacade"]


class FlowsFacade(AppBase):
    """Defining flows and tasks through the app, and their definitions in the database."""

    # -- defining flows and tasks --------------------------------------------------------------

    def flow(self, slug: str, **options: Unpack[FlowKeywords]) -> Flow:
        """Create and register a flow; add steps with ``@flow.step`` and ``@flow.map``.

        ``max_concurrency``, ``rate_limit`` (``"100/m"``), ``concurrency_key`` and ``priority``
        (the default of its runs) are enforced when our workers claim tasks (README: flow
        control). ``schedule`` (a cron expression) starts it with input ``{}`` at every tick
        (more options: :meth:`schedule`)."""
        return self.register(Flow(slug, **options))

    @overload
    def register(self, item: Flow) -> Flow: ...

    @overload
    def register(self, item: Task[P, R]) -> Task[P, R]: ...

    def register(self, item: Flow | Task[P, R]) -> Flow | Task[P, R]:
        """Register a flow or task built elsewhere (e.g. ``(a >> b).to_flow("etl")``); returns it."""
        from pgflow_kombu.flows import Task

        if isinstance(item, Task):
            self._register_flow(item.flow)
            self._tasks[item.flow.slug] = item
            return item
        if not isinstance(item, Flow):
            raise TypeError(f"can only register flows and tasks, not {item!r}")
        return self._register_flow(item)

    def _register_flow(self, flow: Flow) -> Flow:
        existing = self._flows.get(flow.slug)
        if existing is not None and existing is not flow:
            raise ConfigurationError(f"a flow with slug {flow.slug!r} is already registered")
        # The app (PgFlow) starts runs of its flows: RunsFacade.start.
        me = cast("Dispatcher", self)
        owner = flow.dispatcher
        if owner is not None and owner is not me:
            # Rebinding would leave the first app listing a flow that starts through this one.
            raise ConfigurationError(
                f"flow {flow.slug!r} is already registered with {owner!r}; it cannot also be "
                f"registered with {self!r}: a flow belongs to one app (define it again, e.g. "
                "in a function called once per app, to use it in another)"
            )
        self._flows[flow.slug] = flow
        flow.bind(me)
        return flow

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[TaskKeywords],
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[TaskKeywords],
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Make a function a job: a single-step flow. ``task(...)`` still calls the function.

        ``schedule`` (a cron expression, e.g. ``"*/5 * * * *"``) starts it with no arguments at
        every tick; see :meth:`schedule` for input, time zone and catch-up."""
        from pgflow_kombu.flows import task

        def decorate(func: Callable[P, R]) -> Task[P, R]:
            return self.register(task(name=name, **options)(func))

        return decorate(fn) if fn is not None else decorate

    def chain(self, slug: str, *items: Any, **options: Unpack[FlowKeywords]) -> Flow:
        """A flow from existing tasks, each step fed its predecessor's output (Celery's chain).

        Items may be tasks, ``each(task)`` for one run per element, lists for fan-out/fan-in.
        """
        from pgflow_kombu.flows import chain

        return self.register(chain(slug, *items, **options))

    @overload
    def list_flows(self, *, database: Literal[False] = False) -> list[FlowShape]: ...

    @overload
    def list_flows(self, *, database: Literal[True]) -> list[FlowInfo]: ...

    @overload
    def list_flows(self, *, database: bool) -> list[FlowShape] | list[FlowInfo]: ...

    def list_flows(self, *, database: bool = False) -> list[FlowShape] | list[FlowInfo]:
        """The registered flows' shapes; ``database=True`` lists what the database holds."""
        if database:
            return self.client.list_flows()
        return [f.shape() for f in self._flows.values()]

    def upsert_flow(
        self,
        slug: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        **options: Unpack[FlowDataKeywords],
    ) -> dict[str, Any]:
        """(Re)compile a flow from plain data; destructive for an existing slug (runs deleted).
        Its limits (flow keywords ``max_concurrency``, ``rate_limit``, ``concurrency_key``,
        ``priority``; the same keys in a step) are stored with it, in its transaction.

        Returns ``{"status": "compiled", "differences": []}`` for a new flow and
        ``{"status": "recompiled", "differences": [...]}`` for a replaced one (the differences
        from the definition the database held). Options left out take pgflow 0.8.1's defaults
        (max_attempts 3, base_delay 5, timeout 60), not the Elixir port's base_delay 1.
        Concurrent upserts of one slug are serialised by an advisory lock: one definition wins
        whole. See :meth:`Client.upsert_flow`.
        """
        result = self.client.upsert_flow(slug, steps=steps, **options)
        self._verified.discard(slug)
        return result

    def delete_flow(self, slug: str) -> None:
        """Delete a flow with all its runs, tasks and queue (raises FlowNotFound)."""
        self.client.delete_flow(slug)
        self._verified.discard(slug)

    def flow_exists(self, slug: str) -> bool:
        """Whether the database holds a flow with this slug."""
        return self.client.flow_exists(slug)
