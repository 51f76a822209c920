-- Queries behind the dashboard (pgflow_kombu.client.insights): each reads an index range
-- (sql/migrations/0045_runs_api.sql, 0085_dashboard.sql), never a count over every run.

-- name: runs_per_minute
-- Runs started, completed and failed per minute since a time (the last hour on the overview).
SELECT date_trunc('minute', started_at) AS minute, 'started' AS kind, count(*) AS n
FROM pgflow.runs WHERE started_at >= %(since)s GROUP BY 1
UNION ALL
SELECT date_trunc('minute', completed_at), 'completed', count(*)
FROM pgflow.runs WHERE completed_at >= %(since)s GROUP BY 1
UNION ALL
SELECT date_trunc('minute', failed_at), 'failed', count(*)
FROM pgflow.runs WHERE failed_at >= %(since)s GROUP BY 1;

-- name: failing_flows
-- Flows with the most runs failed since a time.
SELECT flow_slug, count(*) AS failed
FROM pgflow.runs WHERE failed_at >= %(since)s
GROUP BY flow_slug ORDER BY failed DESC, flow_slug LIMIT %(limit)s;

-- name: flow_status_counts
-- One flow's runs started since a time, by pgflow status and apart the cancelled ones (pgflow's
-- row says failed), each count stopping at `cap`: a newest-first index range per status, so the
-- cost is bounded however many runs the window holds. Each status is a constant of its own
-- branch: started and failed runs are read from the index that leaves completed runs out
-- (0098_lighter_events.sql), which a status known only at run time could not use.
SELECT 'started' AS status, count(*) AS n FROM (
    SELECT 1 FROM pgflow.runs AS r
    WHERE r.flow_slug = %(flow_slug)s AND r.status = 'started' AND r.started_at >= %(since)s
    ORDER BY r.started_at DESC LIMIT %(cap)s) AS capped
UNION ALL
SELECT 'completed', count(*) FROM (
    SELECT 1 FROM pgflow.runs AS r
    WHERE r.flow_slug = %(flow_slug)s AND r.status = 'completed' AND r.started_at >= %(since)s
    ORDER BY r.started_at DESC LIMIT %(cap)s) AS capped
UNION ALL
SELECT 'failed', count(*) FROM (
    SELECT 1 FROM pgflow.runs AS r
    WHERE r.flow_slug = %(flow_slug)s AND r.status = 'failed' AND r.started_at >= %(since)s
    ORDER BY r.started_at DESC LIMIT %(cap)s) AS capped
UNION ALL
SELECT 'cancelled', count(*) FROM (
    SELECT 1 FROM pgflow_kombu.cancelled_runs AS c
    JOIN pgflow.runs AS r ON r.run_id = c.run_id
    WHERE r.flow_slug = %(flow_slug)s AND r.started_at >= %(since)s
    LIMIT %(cap)s) AS capped;

-- name: step_durations
-- Percentiles (seconds) of one flow's task run times, by step, over tasks completed since a time.
SELECT step_slug, count(*) AS tasks,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY d) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99,
       max(d) AS max
FROM (
    SELECT step_slug, extract(epoch FROM completed_at - started_at)::float8 AS d
    FROM pgflow.step_tasks
    WHERE flow_slug = %(flow_slug)s AND completed_at >= %(since)s AND started_at IS NOT NULL
) AS t
GROUP BY step_slug;

-- name: worker_activity
-- Workers that heartbeated since a time, newest first, with the tasks each holds now.
SELECT w.worker_id, w.queue_name, w.function_name, w.started_at, w.last_heartbeat_at,
       w.deprecated_at,
       (SELECT count(*) FROM pgflow.step_tasks AS t
        WHERE t.last_worker_id = w.worker_id AND t.status = 'started') AS in_flight
FROM pgflow.workers AS w
WHERE w.last_heartbeat_at >= %(since)s
ORDER BY w.last_heartbeat_at DESC
LIMIT %(limit)s;
