-- Queries of benchmarks/scale_out.py (workers on several hosts against one PostgreSQL).

-- name: scale_create_statements_extension
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: scale_server_version
SELECT current_setting('server_version');

-- name: scale_clock
SELECT clock_timestamp();

-- name: scale_workers_alive
SELECT count(*) FROM pgflow.workers
WHERE deprecated_at IS NULL AND last_heartbeat_at > now() - interval '10 seconds';

-- name: scale_finished
SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
       max(completed_at)
FROM pgflow.runs WHERE flow_slug = %(flow_slug)s;

-- name: scale_lock_waiters
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock';

-- name: scale_wal
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, s.wal_records, s.wal_fpi
FROM pg_stat_wal AS s;

-- name: scale_statements_reset
SELECT pg_stat_statements_reset();

-- name: scale_statements
-- Top-level statements only (pg_stat_statements.track = top): a function's time is its call's.
SELECT coalesce(sum(s.total_exec_time), 0)::float8, coalesce(sum(s.calls), 0)::bigint
FROM pg_stat_statements AS s
WHERE s.dbid = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database());

-- name: scale_top_statements
SELECT s.calls, s.total_exec_time::float8, regexp_replace(left(s.query, 70), '\s+', ' ', 'g')
FROM pg_stat_statements AS s
WHERE s.dbid = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
ORDER BY s.total_exec_time DESC
LIMIT %(n)s;

-- name: scale_table_churn
SELECT t.schemaname || '.' || t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_del, t.n_dead_tup,
       t.autovacuum_count
FROM pg_stat_user_tables AS t
WHERE t.schemaname IN ('pgflow', 'pgmq') AND t.n_tup_ins + t.n_tup_upd + t.n_tup_del > 0
ORDER BY t.n_tup_ins + t.n_tup_upd + t.n_tup_del DESC
LIMIT %(n)s;

-- name: scale_connections
-- One row per server connection of the database: where from, which part, what it last ran.
SELECT coalesce(host(a.client_addr), 'local'), a.application_name, left(a.query, 30)
FROM pg_stat_activity AS a
WHERE a.datname = %(dbname)s AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend';
