-- Queries of the job benchmark (benchmarks/workerbench).

-- name: bench_server
SELECT version(), current_setting('data_directory'), current_setting('fsync'),
       current_setting('synchronous_commit'), current_setting('autovacuum'),
       current_setting('shared_buffers'), current_setting('shared_preload_libraries');

-- name: bench_statements_extension
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: bench_statement_time
-- Milliseconds of top-level statements run in one database, and how many, since the server started.
SELECT coalesce(sum(s.total_exec_time), 0)::float8, coalesce(sum(s.calls), 0)::bigint
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = %(dbname)s;

-- name: bench_backends
SELECT pid FROM pg_stat_activity WHERE datname = %(dbname)s;

-- name: bench_ref_read
-- What pgflow 0.8.1's SQL client reads with (PgflowSqlClient.readMessages); the edge worker's
-- defaults: batches of 10, polling every 100 ms for up to 2 s.
SELECT msg_id FROM pgmq.read_with_poll(queue_name => %(queue)s, vt => 30, qty => 10,
                                       max_poll_seconds => 2, poll_interval_ms => 100);

-- name: bench_ref_start_tasks
SELECT run_id, step_slug, task_index, input
FROM pgflow.start_tasks(flow_slug => %(queue)s, msg_ids => %(msg_ids)s::bigint[],
                        worker_id => %(worker_id)s::uuid);
