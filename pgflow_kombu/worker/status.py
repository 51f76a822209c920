"""How a worker is doing (counters) and how it ended (exit codes)."""

from __future__ import annotations

from dataclasses import dataclass

from typing_extensions import assert_never

from pgflow_kombu.worker.tasks import ReportResult

__all__ = ["ExitCode", "WorkerStats"]


class ExitCode:
    """What :meth:`Worker.run` (and ``pgflow-kombu worker``) returns."""

    OK = 0  # stopped cleanly: every task it took was reported or handed back
    STARTUP_FAILED = 1  # configuration, flows or database prevented the start
    CRASHED = 70  # an unexpected internal error stopped the loop
    TASKS_LEFT = 75  # stopped, but tasks still running at the deadline were left for recovery
    FORCED = 130  # a second SIGINT: exited at once


@dataclass
class WorkerStats:
    """Counters of one worker (read by tests and logged at exit)."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    stale: int = 0  # reports the database ignored: the attempt was no longer ours
    released: int = 0  # claimed tasks handed back unstarted (shutdown, reconciliation)
    unclaimed: int = 0  # delivered messages with no queued task (another worker holds it)
    not_started: int = 0  # claimed tasks never started: their claim may have been lost
    claim_batches: int = 0

    def count_report(self, result: ReportResult) -> None:
        """Count one report the database answered."""
        match result:
            case ReportResult.COMPLETED:
                self.completed += 1
            case ReportResult.FAILED | ReportResult.REJECTED:
                self.failed += 1
            case ReportResult.STALE:
                self.stale += 1
            case ReportResult.RETRY:
                pass  # not settled: the reporter sends it again
            case _:
                assert_never(result)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))
