-- Queries of the SQL-core tests: the event log that stands in for Supabase's realtime.send, views of
-- what users and workers observe, and test set-ups (stalled workers, visible messages).

-- name: sqlcore_realtime_log
-- realtime.send as a logger, so tests can read the event sequence of either schema.
CREATE SCHEMA IF NOT EXISTS realtime;
CREATE TABLE realtime.sent_events (
    id bigserial PRIMARY KEY,
    event text NOT NULL,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    private boolean NOT NULL
);
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO realtime.sent_events (event, topic, payload, private)
    VALUES (event, topic, payload, private)
$$;

-- name: sqlcore_realtime_noop
-- realtime.send that does nothing (benchmarks: the reference schema cannot run without one).
CREATE SCHEMA IF NOT EXISTS realtime;
CREATE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean)
RETURNS void LANGUAGE sql AS $$ SELECT $$;

-- name: sqlcore_events
SELECT event, topic, payload, private FROM realtime.sent_events ORDER BY id;

-- name: sqlcore_runs
SELECT run_id, flow_slug, status, input, output, remaining_steps,
       started_at IS NOT NULL AS started, completed_at IS NOT NULL AS completed,
       failed_at IS NOT NULL AS failed
FROM pgflow.runs ORDER BY started_at, run_id;

-- name: sqlcore_step_states
SELECT run_id, step_slug, flow_slug, status, remaining_tasks, initial_tasks, remaining_deps,
       error_message, started_at IS NOT NULL AS started, completed_at IS NOT NULL AS completed,
       failed_at IS NOT NULL AS failed
FROM pgflow.step_states ORDER BY run_id, step_slug;

-- name: sqlcore_step_tasks
SELECT run_id, step_slug, task_index, flow_slug, message_id, status, attempts_count,
       error_message, output, last_worker_id, started_at IS NOT NULL AS started,
       completed_at IS NOT NULL AS completed, failed_at IS NOT NULL AS failed
FROM pgflow.step_tasks ORDER BY run_id, step_slug, task_index;

-- name: sqlcore_queue_messages
-- Live messages of one queue (placeholder: the queue table). Visibility as seconds from now (<= 0: visible).
SELECT msg_id, message, read_ct,
       round(extract(epoch FROM vt - clock_timestamp())::numeric, 1)::float8 AS visible_in
FROM pgmq.{} ORDER BY msg_id;

-- name: sqlcore_archived_messages
SELECT msg_id, message, read_ct FROM pgmq.{} ORDER BY msg_id;

-- name: sqlcore_flow_queues
SELECT queue_name FROM pgmq.list_queues() ORDER BY queue_name;

-- name: sqlcore_schema_columns
SELECT table_name, ordinal_position, column_name, data_type, column_default, is_nullable
FROM information_schema.columns
WHERE table_schema = 'pgflow'
ORDER BY table_name, ordinal_position;

-- name: sqlcore_schema_constraints
SELECT rel.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
FROM pg_constraint c
JOIN pg_class rel ON rel.oid = c.conrelid
WHERE rel.relnamespace = 'pgflow'::regnamespace
  -- our triggers on pgflow tables (constraint triggers show here) are ours, not the schema's
  AND NOT (c.contype = 't' AND starts_with(c.conname, 'pgflow_kombu_'))
ORDER BY 1, 2;

-- name: sqlcore_schema_indexes
-- Indexes named pgflow_kombu_* are ours (the runs API's, sql/migrations/0045_runs_api.sql, and the
-- dashboard's, 0085_dashboard.sql): an index must live in its table's schema, so the prefix is
-- what marks them as not pgflow's.
SELECT tablename, indexname, indexdef FROM pg_indexes
WHERE schemaname = 'pgflow' AND NOT starts_with(indexname, 'pgflow_kombu_')
ORDER BY 1, 2;

-- name: sqlcore_schema_functions
SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
       p.prosecdef, p.provolatile, p.proretset
FROM pg_proc p
WHERE p.pronamespace = 'pgflow'::regnamespace
ORDER BY 1, 2;

-- name: sqlcore_schema_types
SELECT t.typname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_type t
JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
WHERE t.typnamespace = 'pgflow'::regnamespace
ORDER BY 1, 2;

-- name: sqlcore_call
-- Placeholders: the pgflow function, then its named arguments.
SELECT * FROM pgflow.{}({});

-- name: sqlcore_read
SELECT msg_id FROM pgmq.read(queue_name => %(queue)s, vt => %(vt)s, qty => %(qty)s) ORDER BY msg_id;

-- name: sqlcore_add_worker
INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
VALUES (%(worker_id)s, %(queue)s, 'tests')
ON CONFLICT (worker_id) DO NOTHING;

-- name: sqlcore_make_visible
-- Test shortcut for "time passes": every message of a queue (placeholder: its table) is visible.
UPDATE pgmq.{} SET vt = clock_timestamp();

-- name: sqlcore_row_counts
-- How many rows each pgflow table and pgmq queue registry holds (to prove nothing partial stayed).
SELECT (SELECT count(*) FROM pgflow.flows) AS flows,
       (SELECT count(*) FROM pgflow.steps) AS steps,
       (SELECT count(*) FROM pgflow.deps) AS deps,
       (SELECT count(*) FROM pgflow.runs) AS runs,
       (SELECT count(*) FROM pgflow.step_states) AS step_states,
       (SELECT count(*) FROM pgflow.step_tasks) AS step_tasks,
       (SELECT count(*) FROM pgmq.meta) AS queues;

-- name: sqlcore_age_task
-- Pretend the task was claimed %(ago)s ago.
UPDATE pgflow.step_tasks SET started_at = started_at - %(ago)s::interval,
                             queued_at = queued_at - %(ago)s::interval
WHERE run_id = %(run_id)s AND step_slug = %(step_slug)s AND task_index = %(task_index)s;

-- name: sqlcore_heartbeat
-- Set a worker's last heartbeat to %(ago)s ago.
UPDATE pgflow.workers SET last_heartbeat_at = now() - %(ago)s::interval WHERE worker_id = %(worker_id)s;

-- name: sqlcore_delete_worker
DELETE FROM pgflow.workers WHERE worker_id = %(worker_id)s;

-- name: sqlcore_recover
SELECT pgflow_kombu.recover_stalled_tasks(heartbeat_timeout => %(timeout)s::interval) AS recovered;

-- name: sqlcore_add_named_worker
INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
VALUES (%(worker_id)s, %(queue)s, %(function_name)s);

-- name: sqlcore_known_workers
SELECT worker_id FROM pgflow_kombu.known_workers ORDER BY worker_id;

-- name: sqlcore_recover_margin
SELECT pgflow_kombu.recover_stalled_tasks(
    heartbeat_timeout => %(timeout)s::interval, foreign_margin => %(margin)s::interval) AS recovered;

-- name: sqlcore_recover_flow
SELECT pgflow_kombu.recover_stalled_tasks(
    heartbeat_timeout => %(timeout)s::interval, flow_slug => %(flow_slug)s) AS recovered;

-- name: sqlcore_task
SELECT * FROM pgflow.step_tasks
WHERE run_id = %(run_id)s AND step_slug = %(step_slug)s AND task_index = %(task_index)s;

-- name: sqlcore_run
SELECT * FROM pgflow.runs WHERE run_id = %(run_id)s;

-- name: sqlcore_listen
LISTEN pgflow_kombu_run;

-- name: sqlcore_bench_start_flow
SELECT run_id FROM pgflow.start_flow(flow_slug => %(flow_slug)s, input => %(input)s::jsonb);

-- name: sqlcore_bench_read
SELECT msg_id FROM pgmq.read(queue_name => %(flow_slug)s, vt => 30, qty => 10);

-- name: sqlcore_bench_start_tasks
SELECT run_id, step_slug, task_index
FROM pgflow.start_tasks(flow_slug => %(flow_slug)s, msg_ids => %(msg_ids)s::bigint[],
                        worker_id => %(worker_id)s::uuid);

-- name: sqlcore_bench_complete_task
SELECT 1 FROM pgflow.complete_task(run_id => %(run_id)s::uuid, step_slug => %(step_slug)s::text,
                                   task_index => %(task_index)s::int, output => %(output)s::jsonb);

-- name: sqlcore_bench_vacuum
-- Between benchmark chunks: the queue table (placeholder) churns (every archive deletes a row).
VACUUM pgmq.{};

-- name: sqlcore_bench_server_version
SHOW server_version;

-- name: sqlcore_recover_seconds
SELECT * FROM pgflow_kombu.recover_stalled_tasks(stalled_after => %(seconds)s);

-- name: sqlcore_drop_realtime_send
-- Take realtime.send away (a plain PostgreSQL without Supabase).
DROP FUNCTION realtime.send(jsonb, text, text, boolean);

-- name: sqlcore_realtime_schema_only
-- A realtime schema without a send function (events must then be skipped, not fail).
CREATE SCHEMA realtime;

-- name: sqlcore_bench_measured
-- Run a benchmark call (placeholder) under EXPLAIN to count its buffers and WAL, keeping its rows
-- in a temporary table (sqlcore_bench_rows) for the next call.
EXPLAIN (ANALYZE, BUFFERS, WAL, TIMING OFF, FORMAT JSON)
CREATE TEMPORARY TABLE sqlcore_bench_rows ON COMMIT DROP AS {};

-- name: sqlcore_bench_rows
SELECT * FROM sqlcore_bench_rows;

-- name: sqlcore_bench_procedure
-- The benchmark workload run inside the server (no client round trips), still one transaction
-- per call: returns the seconds n runs of the flow took.
CREATE OR REPLACE PROCEDURE public.sqlcore_bench(
    flow text, steps integer, n integer, worker uuid, INOUT seconds float8 DEFAULT NULL
)
LANGUAGE plpgsql AS $$
DECLARE
    began timestamptz := clock_timestamp();
    msg_ids bigint[];
    task record;
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM pgflow.start_flow(flow, '{"order_id": 42, "items": [1, 2, 3]}'::jsonb);
        COMMIT;
        FOR s IN 1 .. steps LOOP
            SELECT array_agg(m.msg_id) INTO msg_ids FROM pgmq.read(flow, 30, 10) m;
            COMMIT;
            FOR task IN SELECT * FROM pgflow.start_tasks(flow, msg_ids, worker) LOOP
                COMMIT;
                PERFORM pgflow.complete_task(task.run_id, task.step_slug, task.task_index,
                                             '{"ok": true, "value": 7}'::jsonb);
                COMMIT;
            END LOOP;
        END LOOP;
    END LOOP;
    seconds := extract(epoch FROM clock_timestamp() - began);
END;
$$;

-- name: sqlcore_bench_call_procedure
CALL public.sqlcore_bench(%(flow_slug)s, %(steps)s, %(n)s, %(worker_id)s);

-- name: notify_listen_all
-- Every channel our triggers notify on: finished runs, dashboards' step changes, watched runs.
LISTEN pgflow_kombu_run; LISTEN pgflow_kombu_step; LISTEN pgflow_kombu_events;
