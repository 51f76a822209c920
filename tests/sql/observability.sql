-- Queries of the observability tests.

-- name: obs_trace_contexts
-- Trace contexts kept for runs that exist (visible to this session).
SELECT c.run_id::text, c.traceparent
FROM pgflow_kombu.run_trace_context AS c JOIN pgflow.runs AS r USING (run_id)
ORDER BY c.run_id;

-- name: obs_terminate_worker_sessions
-- End every session of the worker in this database (claims, reports, heartbeat, messages).
SELECT count(pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND application_name IN ('pgflow-kombu-claims', 'pgflow-kombu-reporter',
                           'pgflow-kombu-worker', 'pgflow-kombu-heartbeat');
