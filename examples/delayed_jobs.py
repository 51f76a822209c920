"""Background jobs now, later and at a time: the delay lives in the queue, not in a worker.

Run: ``python -m examples.delayed_jobs``
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from examples.common import running_worker, show
from pgflow_kombu import PgFlow

app = PgFlow()


@app.task(max_attempts=5, timeout=30)
def send_email(to: str, subject: str) -> dict[str, str]:
    return {"to": to, "subject": subject, "sent_at": datetime.now(timezone.utc).isoformat()}


def main() -> None:
    with running_worker(app):
        started = time.monotonic()
        now = send_email.delay(to="ada@example.com", subject="welcome")
        later = send_email.apply_async(
            kwargs={"to": "bob@example.com", "subject": "day 2"}, countdown=2
        )
        at = app.enqueue_at(
            send_email,
            {"to": "cy@example.com", "subject": "scheduled"},
            datetime.now(timezone.utc) + timedelta(seconds=3),
        )
        for name, handle in (("now", now), ("countdown=2", later), ("at +3 s", at)):
            output = handle.wait(timeout=30).output
            show(f"{name} (after {time.monotonic() - started:.1f} s)", output)


if __name__ == "__main__":
    main()
