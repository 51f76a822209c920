"""Starting runs of a flow through the app's dispatcher (the part of
:class:`~pgflow_kombu.flows.flow.Flow` that does it): ``start``, ``delay`` and the checks of
a run's input that pgflow would make."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pgflow_kombu.errors import FlowInputError, NotBoundError
from pgflow_kombu.flows.dispatch import Dispatcher, check_schedule
from pgflow_kombu.flows.inputs import check_root_map_input
from pgflow_kombu.flows.jsondata import Json, NotJsonError, to_json

if TYPE_CHECKING:
    from pgflow_kombu.flows.flow import Flow

__all__ = ["FlowRuns"]


class FlowRuns:
    """How a flow's runs start: bound to a dispatcher, with inputs checked first."""

    slug: str
    _dispatcher: Dispatcher | None
    # Turns delay(*args, **kwargs) into the run input; set for task and chain flows.
    _input_builder: Callable[..., Json] | None

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
        check_root_map_input(cast("Flow", self), data)
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
            cast("Flow", self),
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
