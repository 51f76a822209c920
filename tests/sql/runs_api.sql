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

-- name: runs_api_bench_flows
SELECT pgflow.create_flow('flow_' || lpad(i::text, 2, '0')) FROM generate_series(0, 19) AS i;

-- name: runs_api_bench_fill
-- Runs first+1 .. first+n of total, set-based, straight into pgflow.runs: 20 flows; of 100 runs
-- 3 started, 7 failed, the rest completed; one every 2 seconds back from now (a million: 23 days).
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, output, remaining_steps, started_at,
                         completed_at, failed_at)
SELECT gen_random_uuid(), 'flow_' || lpad((i %% 20)::text, 2, '0'), v.status,
       jsonb_build_object('user_id', i %% 50000, 'region', (ARRAY['eu', 'us', 'ap'])[1 + i %% 3],
                          'n', i),
       CASE WHEN v.status = 'completed' THEN '{"ok": true}'::jsonb END,
       CASE WHEN v.status = 'started' THEN 1 ELSE 0 END,
       v.started_at,
       CASE WHEN v.status = 'completed' THEN v.started_at + interval '1 second' END,
       CASE WHEN v.status = 'failed' THEN v.started_at + interval '1 second' END
FROM generate_series(%(first)s + 1, %(first)s + %(n)s) AS i
CROSS JOIN LATERAL (
    SELECT CASE WHEN i %% 100 < 3 THEN 'started' WHEN i %% 100 < 10 THEN 'failed'
                ELSE 'completed' END AS status,
           now() - make_interval(secs => (%(total)s - i) * 2.0) AS started_at
) AS v;

-- name: runs_api_bench_cancel
-- One failed run in ten reads as cancelled.
INSERT INTO pgflow_kombu.cancelled_runs (run_id)
SELECT run_id FROM pgflow.runs WHERE status = 'failed' AND get_byte(uuid_send(run_id), 0) < 26;

-- name: runs_api_bench_vacuum
VACUUM ANALYZE pgflow.runs;

-- name: runs_api_bench_at
-- The (started_at, run_id) of the run at a depth in newest-first order (a deep page's cursor).
SELECT started_at, run_id FROM pgflow.runs
ORDER BY started_at DESC, run_id DESC OFFSET %(depth)s LIMIT 1;

-- name: runs_api_bench_events_off
ALTER TABLE pgflow.step_states DISABLE TRIGGER pgflow_kombu_steps_updated;
ALTER TABLE pgflow.runs DISABLE TRIGGER pgflow_kombu_runs_updated;

-- name: runs_api_bench_events_on
ALTER TABLE pgflow.step_states ENABLE TRIGGER pgflow_kombu_steps_updated;
ALTER TABLE pgflow.runs ENABLE TRIGGER pgflow_kombu_runs_updated;

-- name: runs_api_bench_drop_indexes
DROP INDEX IF EXISTS pgflow.pgflow_kombu_runs_started_at, pgflow.pgflow_kombu_runs_flow_started_at,
    pgflow.pgflow_kombu_runs_not_completed, pgflow.pgflow_kombu_runs_input;

-- name: runs_api_bench_sync_off
SET synchronous_commit = off;

-- name: runs_api_bench_chain
SELECT pgflow.create_flow('bench3'), pgflow.add_step('bench3', 'a'),
       pgflow.add_step('bench3', 'b', ARRAY['a']), pgflow.add_step('bench3', 'c', ARRAY['b']);

-- name: runs_api_bench_vacuum_queue
VACUUM pgmq.q_bench3;

-- name: runs_api_bench_explain
-- Placeholder: a query with its values in place.
EXPLAIN (ANALYZE, FORMAT JSON) {};

-- name: events_fail_run
-- A status change of a run by hand (stands in for a writer's transaction).
UPDATE pgflow.runs SET status = 'failed', failed_at = now() WHERE run_id = %(run_id)s;

-- name: runs_api_input_index_def
SELECT indexdef FROM pg_indexes
WHERE schemaname = 'pgflow' AND indexname = 'pgflow_kombu_runs_input';

-- name: runs_api_invalidate_input_index
-- What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
UPDATE pg_index SET indisvalid = false
WHERE indexrelid = 'pgflow.pgflow_kombu_runs_input'::regclass;
