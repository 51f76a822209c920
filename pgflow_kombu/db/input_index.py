"""The optional index of runs' inputs: what makes ``find_runs(input_contains=...)`` an index read.

A GIN index on ``pgflow.runs.input`` gets entries for every path of a run's input when the run
starts and again when it finishes (that update is never HOT), on every job. Without it the filter
reads runs newest first and tests each input (fine within a ``since`` window, slow over millions
of runs), so it is created only on request (``pgflow-kombu db input-index``). Both directions
work CONCURRENTLY: running jobs are never blocked.
"""

from __future__ import annotations

from pgflow_kombu.db.connect import connect
from pgflow_kombu.db.queries import query

__all__ = ["has_input_index", "set_input_index"]


def has_input_index(url: str) -> bool:
    """Whether a valid index of runs' inputs exists."""
    with connect(url) as conn:
        row = conn.execute(query("runs.input_index_state")).fetchone()
    return bool(row and row[0])


def set_input_index(url: str, enabled: bool) -> bool:
    """Create (enabled) or drop the index of runs' inputs; True when something changed. An index
    left invalid by an interrupted creation is dropped and built again."""
    with connect(url, autocommit=True) as conn:
        row = conn.execute(query("runs.input_index_state")).fetchone()
        if enabled and row is not None and row[0]:
            return False
        if not enabled and row is None:
            return False
        if row is not None:
            conn.execute(query("runs.input_index_drop"))
        if enabled:
            conn.execute(query("runs.input_index_create"))
    return True
