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
