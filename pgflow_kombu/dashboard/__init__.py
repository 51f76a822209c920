"""The web dashboard (the ``[dashboard]`` extra: ``pip install 'pgflow-kombu[dashboard]'``).

``pgflow-kombu dashboard`` serves it; :func:`create_app` returns it as an ASGI app to mount in a
Starlette / FastAPI service. Pages: overview, flows, runs, a run, workers; live through
server-sent events fed by the database's notifications; actions are CSRF-protected POSTs.
Everything it reads goes through :class:`~pgflow_kombu.client.Client`.
"""

from __future__ import annotations

from pgflow_kombu.dashboard.app import Dashboard, create_app
from pgflow_kombu.dashboard.security import AuthCheck

__all__ = ["AuthCheck", "Dashboard", "create_app"]
