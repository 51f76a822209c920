"""Structured logging for the worker process: ``key=value`` text or one JSON object per line.

Log calls pass their fields with ``extra={"event": ..., "run_id": ...}``; both formats show them,
so logs can be grepped by event or run and parsed by a collector.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pgflow_kombu.worker.tasks import Outcome

__all__ = ["LOG_FORMATS", "configure_logging", "log_outcome", "say"]

LOG_FORMATS = ("text", "json")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        extras = " ".join(f"{k}={_short(v)}" for k, v in fields.items())
        head, sep, tail = text.partition("\n")
        return f"{head} [{extras}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def configure_logging(level: str | int = "INFO", fmt: str = "text") -> None:
    """Send the root logger to stderr in ``fmt`` at ``level`` (replacing earlier handlers)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Python's warnings (a library's deprecation, say) become log records in the same format.
    logging.captureWarnings(True)


def _logs_json() -> bool:
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def say(
    message: str,
    *,
    event: str,
    level: int = logging.INFO,
    fields: Mapping[str, Any] | None = None,
) -> None:
    """A line for the operator on stderr (the banner, a startup error, a warning).

    With ``--log-format json`` it is a log record like any other (one JSON object with
    ``event`` and ``fields``), so every line on stderr parses; otherwise the plain text, shown
    whatever the log level."""
    if _logs_json():
        logging.getLogger("pgflow_kombu.worker").log(
            level, message.partition("\n")[0], extra={"event": event, **(fields or {})}
        )
    else:
        print(message, file=sys.stderr, flush=True)


_log = logging.getLogger("pgflow_kombu.worker")


def log_outcome(outcome: Outcome) -> None:
    """One line per finished attempt with its duration, as Celery's ``Task ... succeeded in``:
    a success at INFO, a failure at ERROR with its traceback. Fields: event (task_succeeded,
    task_failed), flow_slug, step_slug, task_index, run_id, attempt, duration (seconds)."""
    task = outcome.task
    fields = {
        "flow_slug": task.flow_slug,
        "step_slug": task.step_slug,
        "task_index": task.task_index,
        "run_id": task.run_id,
        "attempt": task.attempt,
        "duration": round(outcome.duration, 6),
    }
    if outcome.failed:
        _log.error(
            "task %s failed in %.4gs (run %s, attempt %d): %s%s",
            task.label,
            outcome.duration,
            task.run_id,
            task.attempt,
            outcome.error,
            f"\n{outcome.traceback.rstrip()}" if outcome.traceback else "",
            extra={"event": "task_failed", **fields, "timed_out": outcome.timed_out},
        )
    elif _log.isEnabledFor(logging.INFO):
        _log.info(
            "task %s succeeded in %.4gs (run %s, attempt %d)",
            task.label,
            outcome.duration,
            task.run_id,
            task.attempt,
            extra={"event": "task_succeeded", **fields},
        )
