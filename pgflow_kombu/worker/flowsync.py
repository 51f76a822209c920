"""Making sure the database holds the flows a worker is about to serve, as the code defines them.

A flow missing from the database is created (``create_flow`` + ``add_step``, which also creates
its queue). A flow whose structure differs (steps, types, dependencies) is refused with
:class:`~pgflow_kombu.errors.FlowMismatch`: running it would feed handlers inputs they were not
written for. Differences in options only are logged; the database's values apply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg

from pgflow_kombu.client import (
    create_flow_from_shape,
    lock_flow_slug,
    read_flow_shape,
    store_limits,
)
from pgflow_kombu.db.connect import connect, translate
from pgflow_kombu.errors import FlowMismatch, FlowNotFound
from pgflow_kombu.flows.shapes import FlowShape, compare_shapes

__all__ = ["ensure_flows"]

log = logging.getLogger("pgflow_kombu.worker")


def ensure_flows(
    url: str, shapes: Mapping[str, FlowShape], flows: Mapping[str, Any] | None = None
) -> list[str]:
    """Create missing flows, verify the others; returns the slugs that were created. The
    limits of ``flows`` (objects with ``limit_rows``) are stored as their code declares them."""
    created: list[str] = []
    with connect(url, autocommit=False) as conn:
        try:
            for slug, shape in shapes.items():
                with conn.transaction():
                    if _ensure_one(conn, slug, shape):
                        created.append(slug)
                    flow = (flows or {}).get(slug)
                    if flow is not None and hasattr(flow, "limit_rows"):
                        store_limits(conn, flow)
        except psycopg.Error as exc:
            raise translate(exc) from exc
    return created


def _ensure_one(conn: psycopg.Connection[Any], slug: str, shape: FlowShape) -> bool:
    lock_flow_slug(conn, slug)
    try:
        stored = read_flow_shape(conn, slug)
    except FlowNotFound:
        create_flow_from_shape(conn, shape)
        log.info("created flow %r in the database", slug, extra={"event": "flow_created"})
        return True
    differences = compare_shapes(shape, stored)
    structure = [str(d) for d in differences if d.kind == "structure"]
    if structure:
        raise FlowMismatch(
            f"flow {slug!r} in the database differs from the code: {'; '.join(structure)} "
            "(give the new version another slug, or replace the stored flow with "
            "'pgflow-kombu flows upsert')",
            flow_slug=slug,
            differences=structure,
        )
    for difference in differences:
        log.warning(
            "flow %r: %s (the database's value applies)",
            slug,
            difference,
            extra={"event": "flow_options_differ"},
        )
    return False
