"""The worker: executes pgflow flows from their queues.

Pools and what a timeout does
=============================

Every task runs under its step's timeout (the step's ``timeout`` option, else the flow's).

* ``processes``: each slot is a child process. A handler that runs past its timeout is killed
  with its process (SIGKILL), the process is replaced, and the attempt fails with a
  ``TimeoutError`` (pgflow retries it per its ``max_attempts``). Handlers cannot hang the worker.
* ``threads`` (default) and ``asyncio``: Python cannot kill a thread, and a coroutine only stops
  at an ``await``. At the deadline the worker fails the attempt with the same ``TimeoutError``
  and frees the slot (a new thread takes its place; a coroutine is cancelled), so a hung handler
  never blocks the other slots. The handler itself may keep running: it is counted and logged
  as a *stuck* slot, and whatever it returns later is discarded - the database never sees a
  completion of an attempt that already failed. A coroutine that blocks the event loop without
  awaiting stalls the whole asyncio pool: run such code in the thread or process pool.

Guarantees
==========

* At least once: a task whose outcome never reached the database runs again. One report per
  attempt, applied only while that attempt is the task's current one
  (``pgflow_kombu.report_tasks`` checks status, attempt and worker), so a late or repeated
  report never completes an attempt twice, nor one that already failed.
* A graceful stop hands back claimed tasks that never started and leaves tasks still running at
  the deadline to stalled-task recovery (never failed). A worker killed outright is detected by
  its stale heartbeat and its tasks are requeued by the other workers (the lost attempt counts).
* Claims and reports commit asynchronously (``synchronous_commit=off`` on the worker's own
  connections; the transport does the same for reads): a database crash may forget the last
  few hundred milliseconds of them. A forgotten claim leaves the task queued; a forgotten
  report leaves it started by this worker, which, after any lost connection, hands back the
  tasks the database says it started but that it no longer holds. Pass
  ``Worker(..., synchronous_commit=True)`` to wait for the disk on every claim and report.
* Network faults: never a second start by a worker that could know it had lost the task. The
  others may requeue a worker's tasks once its heartbeat is ``stalled_after`` old, so a worker
  claims, and starts a claimed task, only while its last heartbeat that went through was sent
  less than 0.9 x ``stalled_after`` ago; a claimed task past that is handed back (if still its
  own), never started. Every connection has keepalives and ``tcp_user_timeout`` (see
  :class:`~pgflow_kombu.settings.Liveness`), so a cut link is noticed, and logged once
  (``db_unreachable``, then ``db_reconnected``), within seconds.

Threads and processes: :class:`Worker` documents the loop; ``claiming.py``, ``claims.py``,
``reporter.py``,
``membership.py`` and ``pools/`` one concern each.
"""

from __future__ import annotations

from pgflow_kombu.worker.claiming import ClaimingSource
from pgflow_kombu.worker.membership import Membership
from pgflow_kombu.worker.pools import POOL_KINDS, PoolKind
from pgflow_kombu.worker.source import Delivery, MessageSource, PgmqSource
from pgflow_kombu.worker.status import ExitCode, WorkerStats
from pgflow_kombu.worker.tasks import ClaimedTask, Outcome
from pgflow_kombu.worker.worker import Worker

__all__ = [
    "POOL_KINDS",
    "ClaimedTask",
    "ClaimingSource",
    "Delivery",
    "ExitCode",
    "Membership",
    "MessageSource",
    "Outcome",
    "PgmqSource",
    "PoolKind",
    "Worker",
    "WorkerStats",
]
