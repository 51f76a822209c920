"""The worker's retention: prune finished runs and queue archives older than ``retention``, and
rate-limit buckets that are full again.

A thread of its own (a long prune never delays heartbeats) wakes every ``interval`` seconds and
tries a session advisory lock, so one worker at a time prunes however many run; the others skip
the round. The holder deletes ``batch_size`` rows per transaction (``pgflow_kombu.prune_runs``,
``prune_archives`` then ``prune_rate_buckets``) with a short pause between batches, so the rows it
locks are few and briefly held and the workers' claims and reports go on meanwhile. A session
lock cannot live behind a transaction pooler, so poll-only mode (``PGFLOW_POLL_ONLY``) refuses a
retention: run ``pgflow-kombu runs prune`` on a schedule instead.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta
from typing import Any

from typing_extensions import LiteralString

from pgflow_kombu.client.control import prune_batches
from pgflow_kombu.db.connect import poll_only
from pgflow_kombu.db.queries import query
from pgflow_kombu.errors import ConfigurationError, PgFlowError
from pgflow_kombu.settings import WORKER_DEFAULTS
from pgflow_kombu.worker.link import Link

__all__ = ["DEFAULT_RETENTION_BATCH", "Retention"]

log = logging.getLogger("pgflow_kombu.worker")

DEFAULT_RETENTION_BATCH = 500


class Retention:
    def __init__(
        self,
        url: str,
        retention: timedelta,
        *,
        interval: float = WORKER_DEFAULTS.retention_interval,
        batch_size: int = DEFAULT_RETENTION_BATCH,
        pause: float = 0.05,
    ) -> None:
        if poll_only():
            raise ConfigurationError(
                "a worker's retention takes a session advisory lock, which a transaction pooler "
                "cannot hold (PGFLOW_POLL_ONLY is set): run `pgflow-kombu runs prune "
                "--older-than AGE` on a schedule instead"
            )
        self.retention = retention
        self.interval = interval
        self.batch_size = batch_size
        self.pause = pause
        self.pruned_runs = 0
        self.pruned_messages = 0
        self.pruned_buckets = 0
        self.rounds = 0  # rounds this worker held the lock for
        self._link = Link(url, application_name="pgflow-kombu-retention")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgflow-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._link.close()

    def prune_once(self) -> bool:
        """One round, if no other worker is pruning; returns whether this one did."""
        rows = self._link.fetch(query("control.try_retention_lock"))
        if not rows or not rows[0][0]:
            return False
        try:

            def count(sql: LiteralString, params: dict[str, Any]) -> int:
                found = self._link.fetch(sql, params)
                return int(found[0][0]) if found and found[0][0] else 0

            runs, messages, buckets = prune_batches(
                count, self.retention, self.batch_size, pause=self.pause, stop=self._stop.is_set
            )
        finally:
            if self._link.connected:  # a lost connection released the lock already
                self._link.fetch(query("control.release_retention_lock"))
        self.rounds += 1
        self.pruned_runs += runs
        self.pruned_messages += messages
        self.pruned_buckets += buckets
        if runs or messages or buckets:
            log.info(
                "pruned %d finished run(s) and %d archived message(s) older than %s, "
                "%d idle rate bucket(s)",
                runs,
                messages,
                self.retention,
                buckets,
                extra={
                    "event": "pruned",
                    "runs": runs,
                    "messages": messages,
                    "rate_buckets": buckets,
                },
            )
        return True

    def _run(self) -> None:
        # The first round soon after start (spread over workers started together), then every
        # interval.
        wait = random.uniform(0, min(self.interval, 5.0))
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                self.prune_once()
            except PgFlowError as exc:
                log.warning("pruning failed: %s", exc, extra={"event": "prune_failed"})
            except Exception:
                log.exception("retention thread error")
