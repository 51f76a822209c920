"""What every part of :class:`~pgflow_kombu.app.PgFlow` stands on: its settings, its registry of
flows and tasks, its client, and the check that the database holds a flow as the code defines it."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pgflow_kombu.client import Client, FlowRef, flow_slug_of
from pgflow_kombu.errors import ConfigurationError, FlowMismatch, FlowNotFound
from pgflow_kombu.flows import Flow
from pgflow_kombu.flows.eager import EagerRuns
from pgflow_kombu.flows.shapes import compare_shapes
from pgflow_kombu.observability.hooks import Hooks
from pgflow_kombu.settings import Settings

if TYPE_CHECKING:
    from pgflow_kombu.flows import Task
    from pgflow_kombu.worker.byflow import FlowWorkers


__all__ = ["AppBase"]


class AppBase:
    """An app's state: settings, registered flows and tasks, the client (made on first use)."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        eager: bool = False,
        **settings: Any,
    ) -> None:
        self.settings = Settings.load(database_url=database_url, **settings)
        self.eager = eager
        self._flows: dict[str, Flow] = {}
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._client: Client | None = None
        self._verified: set[str] = set()
        self._lock = threading.Lock()
        self._flow_workers: FlowWorkers | None = None
        # Callbacks on what workers serving this app do (see pgflow_kombu.observability.hooks).
        self.hooks = Hooks()
        self._eager_runs = EagerRuns()

    def __repr__(self) -> str:
        return f"<PgFlow flows={sorted(self._flows)}>"

    # -- the database --------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The configured URL; else ``PGFLOW_DATABASE_URL`` as it is at first use, so that a
        module-level ``app = PgFlow()`` finds the database a CLI command set up after import."""
        url = self.settings.database_url or os.environ.get("PGFLOW_DATABASE_URL")
        if not url:
            raise ConfigurationError(
                "no database configured: set PGFLOW_DATABASE_URL or pass PgFlow(database_url=...) "
                "(the pgflow-kombu CLI starts an embedded PostgreSQL and sets it for you)"
            )
        return url

    @property
    def client(self) -> Client:
        """The client on this app's database (created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = Client(
                    self.database_url,
                    pool_min_size=self.settings.pool_min_size,
                    pool_max_size=self.settings.pool_max_size,
                    poll_interval=self.settings.poll_interval,
                )
            return self._client

    @property
    def flows(self) -> Mapping[str, Flow]:
        """The flows registered with this app, by slug (tasks included)."""
        return dict(self._flows)

    def get_flow(self, flow: FlowRef) -> Flow:
        """A registered flow by slug (raises FlowNotFound)."""
        slug = flow_slug_of(flow)
        try:
            return self._flows[slug]
        except KeyError:
            raise FlowNotFound(f"no flow {slug!r} is registered with this app") from None

    # -- flow definitions in the database -------------------------------------------------------

    def ensure_flow(self, flow: Flow, *, recompile: bool = False) -> None:
        """Make sure the database holds ``flow`` as defined in code.

        A missing flow is created; one that differs raises :class:`FlowMismatch` unless
        ``recompile=True``, which replaces it (deleting its runs, as ``upsert_flow`` does).
        """
        if flow.slug in self._verified and not recompile:
            return
        shape = flow.shape()
        try:
            stored = self.client.get_flow_shape(flow.slug)
        except FlowNotFound:
            if self.client.compile_flow(shape, limits=flow.limit_rows()):
                self._verified.add(flow.slug)
                return
            stored = self.client.get_flow_shape(flow.slug)  # created meanwhile elsewhere
        differences = compare_shapes(shape, stored)
        if differences and not recompile:
            listed = "; ".join(str(d) for d in differences)
            raise FlowMismatch(
                f"flow {flow.slug!r} in the database differs from the code ({listed}): "
                f"run 'pgflow-kombu flows upsert {flow.slug} -A <app>' or "
                f"app.ensure_flow(flow, recompile=True) to replace it (this deletes its runs), "
                "or give the changed flow a new slug",
                flow_slug=flow.slug,
                differences=[str(d) for d in differences],
            )
        if differences:
            self.client.replace_flow(shape, limits=flow.limit_rows())
        else:
            self.client.store_limits(flow)
        self._verified.add(flow.slug)

    def _served(self, flows: Sequence[FlowRef] | None) -> dict[str, Flow]:
        if flows is None:
            return dict(self._flows)
        return {flow_slug_of(f): self.get_flow(f) for f in flows}
