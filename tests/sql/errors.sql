-- Statements that fail on purpose, one SQLSTATE class each (tests/integration/test_db_errors.py).

-- name: err_unique
INSERT INTO pgflow.flows (flow_slug) VALUES ('dup_flow'), ('dup_flow');

-- name: err_out_of_range
SELECT (2147483647 + 1)::int;

-- name: err_bad_json
SELECT '{"a": NaN}'::jsonb;

-- name: err_missing_pgflow_table
SELECT * FROM pgflow.no_such_table;

-- name: err_missing_pgflow_kombu_function
SELECT pgflow_kombu.no_such_function();

-- name: err_missing_other_table
SELECT * FROM public.no_such_table_here;

-- name: err_statement_timeout
SELECT pg_sleep(2);

-- name: err_set_statement_timeout
SET statement_timeout = '50ms';

-- name: err_terminate_self
SELECT pg_terminate_backend(pg_backend_pid());

-- name: err_raise_with_detail
DO $$ BEGIN RAISE EXCEPTION 'first line' USING DETAIL = 'some detail', HINT = 'a hint'; END $$;

-- name: bad_input_tables
-- Every table of ours and pgmq's, but the heartbeat-like ones (their rows are counted one by one:
-- query_to_xml would need a server built with libxml, which the embedded one is not).
SELECT t.schemaname, t.tablename
FROM pg_tables AS t
WHERE t.schemaname IN ('pgflow', 'pgmq', 'pgflow_kombu')
  AND (t.schemaname, t.tablename) NOT IN (('pgflow', 'workers'), ('pgflow_kombu', 'consumers'))
ORDER BY 1, 2;

-- name: bad_input_start_flow
SELECT run_id FROM pgflow.start_flow(%(flow_slug)s, %(input)s::jsonb, %(run_id)s::uuid);

-- name: bad_input_start_flow_text
SELECT run_id FROM pgflow.start_flow(%(flow_slug)s, %(input)s::jsonb);

-- name: bad_input_create_flow
SELECT pgflow.create_flow(%(flow_slug)s, %(max_attempts)s::int, %(base_delay)s::int,
                          %(timeout)s::int);

-- name: bad_input_add_step
SELECT pgflow.add_step(%(flow_slug)s, %(step_slug)s, %(deps)s::text[]);

-- name: bad_input_start_flow_delayed
SELECT pgflow_kombu.start_flow_delayed(%(flow_slug)s, '{}'::jsonb, NULL, %(delay)s);
