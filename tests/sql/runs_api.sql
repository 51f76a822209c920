-- Queries of the runs API and live events tests.

-- name: runs_api_flow
SELECT pgflow.create_flow(%(flow_slug)s), pgflow.add_step(%(flow_slug)s, 'only');

-- name: runs_api_insert_run
-- A run row as pgflow keeps it, at a chosen start time (no steps: the listing reads runs only).
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, remaining_steps, started_at,
                         completed_at, failed_at)
VALUES (%(run_id)s, %(flow_slug)s, %(status)s, %(input)s, 0, %(started_at)s,
        CASE WHEN %(status)s = 'completed' THEN %(started_at)s END,
        CASE WHEN %(status)s = 'failed' THEN %(started_at)s END);

-- name: runs_api_cancel
-- A cancelled run as the run control leaves it: pgflow's row failed, a cancelled_runs row.
WITH failed AS (
    UPDATE pgflow.runs SET status = 'failed', failed_at = started_at, completed_at = NULL
    WHERE run_id = %(run_id)s
)
INSERT INTO pgflow_kombu.cancelled_runs (run_id, reason) VALUES (%(run_id)s, 'test');

-- name: events_watch_count
SELECT count(*) FROM pgflow_kombu.watched_runs;

-- name: events_listen
LISTEN pgflow_kombu_events;
