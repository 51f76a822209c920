-- Queries of the dashboard's tests and benchmark.

-- name: dashboard_seed_runs
-- n runs of one flow started over the last `spread` seconds: 80 per cent completed, 10 failed,
-- 10 still started (rows only, as a busy system leaves them; no task runs).
INSERT INTO pgflow.runs (run_id, flow_slug, status, input, remaining_steps, started_at,
                         completed_at, failed_at)
SELECT gen_random_uuid(), %(flow_slug)s,
       CASE mod(i, 10) WHEN 0 THEN 'failed' WHEN 1 THEN 'started' ELSE 'completed' END,
       jsonb_build_object('i', i),
       CASE mod(i, 10) WHEN 1 THEN 1 ELSE 0 END,
       t.at,
       CASE WHEN mod(i, 10) > 1 THEN t.at + interval '1 second' END,
       CASE WHEN mod(i, 10) = 0 THEN t.at + interval '2 seconds' END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT now() - make_interval(secs => i * %(spread)s::float8 / %(n)s) AS at) AS t;

-- name: dashboard_analyze
VACUUM ANALYZE pgflow.runs;

-- name: dashboard_listen_steps
LISTEN pgflow_kombu_step;

-- name: dashboard_listeners
SELECT count(*) FROM pgflow_kombu.dashboard_listeners;

-- name: dashboard_add_worker
-- A worker row as pgflow's TypeScript edge worker writes it, heartbeating `age` seconds ago.
INSERT INTO pgflow.workers (worker_id, queue_name, function_name, started_at, last_heartbeat_at)
VALUES (%(worker_id)s, %(queue_name)s, %(function_name)s, now() - interval '10 minutes',
        now() - make_interval(secs => %(age)s));

-- name: dashboard_mark_cancelled
-- What cancelling a failed-looking run leaves beside pgflow's row (0045_runs_api.sql).
INSERT INTO pgflow_kombu.cancelled_runs (run_id) VALUES (%(run_id)s);
