-- Queries used only by the read-and-claim tests (tests/integration/test_read_claim*.py).

-- name: read_claim_messages
-- Every live message of a queue table (placeholder): read count and seconds until visible.
SELECT msg_id, read_ct, extract(epoch FROM vt - clock_timestamp())::float8 AS visible_in
FROM pgmq.{} ORDER BY msg_id;

-- name: read_claim_tasks_of_flow
SELECT run_id::text, step_slug, task_index, status, attempts_count, last_worker_id::text,
       started_at IS NOT NULL AS has_started_at, message_id
FROM pgflow.step_tasks WHERE flow_slug = %(flow_slug)s
ORDER BY message_id;

-- name: read_claim_call
-- The call with arguments given as they are (NULLs included), for the bad-input tests.
SELECT * FROM pgflow_kombu.read_and_claim(
    flow_slugs => %(flow_slugs)s::text[], worker_ids => %(worker_ids)s::uuid[],
    qty => %(qty)s::int, read_visibility => %(read_visibility)s::int);

-- name: bench_claim_extension
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: bench_claim_reset
SELECT pg_stat_statements_reset();

-- name: bench_claim_statements
-- The top-level statements run in this database since the last reset (what clients sent), by
-- kind: claim (reads and claims), report, other. Times in milliseconds: execution, and planning
-- when the server tracks it (pg_stat_statements.track_planning; nested statements' planning is
-- part of their caller's execution).
SELECT CASE
           WHEN s.query LIKE '%read_and_claim%' OR s.query LIKE '%claim_tasks%'
                OR s.query LIKE '%SKIP LOCKED%' OR s.query LIKE '%pgmq.read%' THEN 'claim'
           WHEN s.query LIKE '%report_tasks%' THEN 'report'
           ELSE 'other'
       END AS kind,
       sum(s.calls)::bigint AS calls,
       sum(s.total_exec_time + s.total_plan_time)::float8 AS exec_ms
FROM pg_stat_statements AS s
WHERE s.dbid = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
  AND s.query NOT LIKE '%pg_stat_statements%'
GROUP BY 1;

-- name: claiming_kill_listener
-- Cut the listening connections of the message sources on this database.
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = 'pgflow-kombu-listen' AND datname = current_database();

-- name: claiming_has_trigger
SELECT EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgrelid = to_regclass('pgmq.' || %(table)s) AND tgname = 'pgflow_kombu_wake');

-- name: claiming_drop_trigger
DROP TRIGGER IF EXISTS pgflow_kombu_wake ON pgmq.{};

-- name: claiming_listeners
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'pgflow-kombu-listen' AND datname = current_database();
