-- Queries of the runs API (pgflow_kombu.client.history) and of live events (client.events).
--
-- Filters are "param IS NULL OR ...": the client executes these unprepared, so each is planned
-- with its values and the planner folds the absent filters away (a generic plan could not pick
-- the index that fits the filters given).
--
-- status: a run with a row in pgflow_kombu.cancelled_runs reads 'cancelled' whatever pgflow's
-- row says; 'failed' etc. then exclude cancelled runs.

-- name: find_runs
-- Newest first by (started_at, run_id); after_* is the keyset cursor (the last row of the
-- previous page). One row more than the page tells whether there is a next page.
SELECT r.run_id, r.flow_slug,
       CASE WHEN c.run_id IS NULL THEN r.status ELSE 'cancelled' END AS status,
       r.input, r.output, r.remaining_steps, r.started_at, r.completed_at, r.failed_at
FROM pgflow.runs AS r
LEFT JOIN pgflow_kombu.cancelled_runs AS c ON c.run_id = r.run_id
WHERE (%(flow_slug)s::text IS NULL OR r.flow_slug = %(flow_slug)s::text)
  AND (%(status)s::text IS NULL OR %(status)s::text = 'cancelled' OR r.status = %(status)s::text)
  AND (%(status)s::text IS NULL OR (c.run_id IS NOT NULL) = (%(status)s::text = 'cancelled'))
  AND (%(since)s::timestamptz IS NULL OR r.started_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR r.started_at < %(until)s::timestamptz)
  AND (%(input_contains)s::jsonb IS NULL OR r.input @> %(input_contains)s::jsonb)
  AND (%(after_started_at)s::timestamptz IS NULL
       OR (r.started_at, r.run_id) < (%(after_started_at)s::timestamptz, %(after_run_id)s::uuid))
ORDER BY r.started_at DESC, r.run_id DESC
LIMIT %(limit)s;

-- name: count_runs
-- Per pgflow status (index-only scans), and apart the cancelled runs per the pgflow status
-- their rows hold (read from the small cancelled_runs table): the client moves those.
SELECT 'runs' AS part, r.status, count(*) AS n
FROM pgflow.runs AS r
WHERE (%(flow_slug)s::text IS NULL OR r.flow_slug = %(flow_slug)s::text)
  AND (%(since)s::timestamptz IS NULL OR r.started_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR r.started_at < %(until)s::timestamptz)
GROUP BY r.status
UNION ALL
SELECT 'cancelled', r.status, count(*)
FROM pgflow_kombu.cancelled_runs AS c
JOIN pgflow.runs AS r ON r.run_id = c.run_id
WHERE (%(flow_slug)s::text IS NULL OR r.flow_slug = %(flow_slug)s::text)
  AND (%(since)s::timestamptz IS NULL OR r.started_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR r.started_at < %(until)s::timestamptz)
GROUP BY r.status;

-- name: listen_events
LISTEN pgflow_kombu_events;

-- name: watch_run
-- Register (or refresh) interest in a run's events; expired rows of crashed watchers go too.
WITH gone AS (
    DELETE FROM pgflow_kombu.watched_runs WHERE expires_at < now() - interval '1 minute'
)
INSERT INTO pgflow_kombu.watched_runs (run_id, watcher_id, expires_at)
VALUES (%(run_id)s, %(watcher_id)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (run_id, watcher_id) DO UPDATE SET expires_at = EXCLUDED.expires_at;

-- name: unwatch_run
DELETE FROM pgflow_kombu.watched_runs
WHERE run_id = %(run_id)s AND watcher_id = %(watcher_id)s;

-- name: run_event_state
-- The run as events describe it: its status (cancelled when cancelled), times, output, and the
-- first failed step's error.
SELECT r.run_id, r.flow_slug,
       CASE WHEN c.run_id IS NULL THEN r.status ELSE 'cancelled' END AS status,
       r.started_at, r.completed_at, r.failed_at, c.cancelled_at,
       CASE WHEN octet_length(r.output::text) <= %(max_output)s THEN r.output END AS output,
       coalesce(octet_length(r.output::text) > %(max_output)s, false) AS output_omitted,
       (SELECT ss.error_message FROM pgflow.step_states AS ss
        WHERE ss.run_id = r.run_id AND ss.status = 'failed'
        ORDER BY ss.failed_at, ss.step_slug LIMIT 1) AS error_message
FROM pgflow.runs AS r
LEFT JOIN pgflow_kombu.cancelled_runs AS c ON c.run_id = r.run_id
WHERE r.run_id = %(run_id)s;

-- name: step_event_states
-- Each step of the run in definition order, with its output once completed unless its
-- completion was already reported (single step: its task's output; map: the task outputs in index order),
-- left out above max_output bytes.
-- A skipped step (pgflow_kombu.skipped_steps; pgflow's row says completed) reads 'skipped'.
SELECT ss.step_slug, CASE WHEN k.run_id IS NULL THEN ss.status ELSE 'skipped' END AS status,
       s.step_index, ss.started_at, ss.completed_at, ss.failed_at, k.skipped_at, k.skip_reason,
       coalesce(ss.error_message, k.error_message) AS error_message,
       CASE WHEN o.output_size <= %(max_output)s THEN o.output END AS output,
       coalesce(o.output_size > %(max_output)s, false) AS output_omitted
FROM pgflow.step_states AS ss
JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
LEFT JOIN LATERAL (
    SELECT v.output, octet_length(v.output::text) AS output_size
    FROM (SELECT CASE WHEN s.step_type = 'map'
                      THEN coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
                      ELSE (array_agg(t.output ORDER BY t.task_index))[1] END AS output
          FROM pgflow.step_tasks AS t
          WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
            AND t.status = 'completed') AS v
) AS o ON ss.status = 'completed' AND NOT ss.step_slug = ANY(%(reported)s::text[])
LEFT JOIN pgflow_kombu.skipped_steps AS k ON k.run_id = ss.run_id AND k.step_slug = ss.step_slug
WHERE ss.run_id = %(run_id)s
ORDER BY s.step_index;

-- name: input_index_state
-- The optional index of runs' inputs (pgflow_kombu.db.input_index): absent (no row), valid, or
-- left invalid by an interrupted CREATE INDEX CONCURRENTLY.
SELECT x.indisvalid AS valid
FROM pg_index AS x
WHERE x.indexrelid = to_regclass('pgflow.pgflow_kombu_runs_input');

-- name: input_index_create
CREATE INDEX CONCURRENTLY IF NOT EXISTS pgflow_kombu_runs_input
    ON pgflow.runs USING gin (input jsonb_path_ops);

-- name: input_index_drop
DROP INDEX CONCURRENTLY IF EXISTS pgflow.pgflow_kombu_runs_input;
