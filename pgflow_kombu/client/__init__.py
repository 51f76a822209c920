"""The client: start runs, read and wait for them, manage flow definitions in the database.

Return values and errors (the seeds' ``{:ok, x}`` / ``{:error, reason}`` in Python):

=================================  ==========================================================
seeds                              here
=================================  ==========================================================
``{:ok, run_id}``                  the ``UUID`` is returned
``{:ok, run}``                     a :class:`~pgflow_kombu.types.Run` is returned
``{:error, :not_found}``           :class:`~pgflow_kombu.errors.RunNotFound` / ``FlowNotFound``
                                   (``WorkerNotFound`` for the app's ``stop_worker(flow)``)
``{:error, :timeout}``             :class:`~pgflow_kombu.errors.RunTimeout`
``{:error, %Run{status: failed}}`` :class:`~pgflow_kombu.errors.RunFailed` (``.run`` holds it)
``{:ok, boolean}``                 ``bool``
``{:error, term}``                 another :class:`~pgflow_kombu.errors.PgFlowError`
=================================  ==========================================================
"""

from __future__ import annotations

from pgflow_kombu.client.base import CORE_VERSION, FlowRef, HasSlug, flow_slug_of
from pgflow_kombu.client.control import ControlMixin
from pgflow_kombu.client.events import EventsMixin
from pgflow_kombu.client.flows import (
    FlowsMixin,
    create_flow_from_shape,
    lock_flow_slug,
    read_flow_shape,
    store_limits,
)
from pgflow_kombu.client.history import HistoryMixin
from pgflow_kombu.client.inputs import check_timeout, run_id_text, run_input
from pgflow_kombu.client.insights import InsightsMixin
from pgflow_kombu.client.runs import RunsMixin
from pgflow_kombu.client.schedules import SchedulesMixin
from pgflow_kombu.client.workers import WorkersMixin

__all__ = [
    "CORE_VERSION",
    "Client",
    "FlowRef",
    "HasSlug",
    "check_timeout",
    "create_flow_from_shape",
    "flow_slug_of",
    "lock_flow_slug",
    "read_flow_shape",
    "run_id_text",
    "run_input",
    "store_limits",
]


class Client(
    RunsMixin,
    HistoryMixin,
    EventsMixin,
    FlowsMixin,
    SchedulesMixin,
    WorkersMixin,
    InsightsMixin,
    ControlMixin,
):
    """Talks to one database. Thread-safe; connections come from a pool opened on first use.

    One mixin per concept (``client/runs.py``, ``history.py``, ``events.py``, ``flows.py``,
    ``schedules.py``, ``workers.py``, ``insights.py``, ``control.py``), all on the pool and
    connection handling of ``client/base.py``.
    """
