"""Database CPU spent on a phase, three ways:

* ``server``: every process of the PostgreSQL server (backends, WAL writer, checkpointer,
  autovacuum...), exited ones included (the postmaster's reaped-children times). Only true when
  nothing else uses the server, as on the scratch cluster the benchmark starts;
* ``backends``: the backends connected to the system's database at the start or the end of the
  phase (a connection opened and closed within it is missed);
* ``statements``: pg_stat_statements' ``total_exec_time`` of the database's top-level statements
  (wall time inside the executor: includes lock waits, not commit flushes).

CPU times need the server on this machine (psutil reads its processes); otherwise those are None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.workerbench.system import bench_query


def _cpu(process: psutil.Process, *, children: bool = False) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    total = times.user + times.system
    if children:
        total += times.children_user + times.children_system
    return float(total)


@dataclass
class Reading:
    server: float | None
    backends: dict[int, float]
    statements_ms: float | None


class DbCpu:
    def __init__(self, admin_url: str) -> None:
        from pgflow_kombu.db.connect import connect

        self.conn = connect(admin_url)
        self.postmaster = self._postmaster()
        # Statement times only where the server preloads pg_stat_statements (the scratch
        # cluster does); its view needs the extension in the database we read it from.
        self.statements = "pg_stat_statements" in self.server_info()["preload"]
        if self.statements:
            self.conn.execute(bench_query("bench_statements_extension"))

    def _row(self, name: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
        row = self.conn.execute(bench_query(name), params).fetchone()
        if row is None:
            raise RuntimeError(f"{name} returned no row")
        return tuple(row)

    def _postmaster(self) -> psutil.Process | None:
        row = self._row("bench_server")
        try:
            pid = int((Path(row[1]) / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None  # not on this machine (or not readable)

    def server_info(self) -> dict[str, Any]:
        row = self._row("bench_server")
        keys = ("version", "data_directory", "fsync", "synchronous_commit", "autovacuum")
        return {**dict(zip(keys, row, strict=False)), "shared_buffers": row[5], "preload": row[6]}

    def read(self, dbname: str) -> Reading:
        server = None
        backends: dict[int, float] = {}
        if self.postmaster is not None:
            server = _cpu(self.postmaster, children=True) + sum(
                _cpu(child) for child in self.postmaster.children()
            )
            pids = [
                r[0] for r in self.conn.execute(bench_query("bench_backends"), {"dbname": dbname})
            ]
            for pid in pids:
                try:
                    backends[pid] = _cpu(psutil.Process(pid))
                except psutil.Error:
                    continue
        statements = None
        if self.statements:
            statements = float(self._row("bench_statement_time", {"dbname": dbname})[0])
        return Reading(server, backends, statements)

    def close(self) -> None:
        self.conn.close()


def per_job_us(before: Reading, after: Reading, jobs: int) -> dict[str, float]:
    """Microseconds per job of the three measures between two readings (those available)."""
    found: dict[str, float] = {}
    if before.server is not None and after.server is not None:
        found["cpu_server"] = (after.server - before.server) / jobs * 1e6
        backends = sum(
            after.backends.get(pid, spent) - before.backends.get(pid, 0.0)
            for pid, spent in {**before.backends, **after.backends}.items()
        )
        found["cpu_backends"] = backends / jobs * 1e6
    if before.statements_ms is not None and after.statements_ms is not None:
        found["statements"] = (after.statements_ms - before.statements_ms) / jobs * 1e3
    return found
