-- Queries of the transaction-pooling tests (tests/integration/test_pgbouncer.py) and of the
-- connection census (benchmarks/scale_out.py reads the same by application_name).

-- name: plus_one
SELECT %(n)s::int + 1;

-- name: select_one
SELECT 1;

-- name: listen_test_channel
LISTEN pks_channel;

-- name: notify_test_channel
NOTIFY pks_channel, 'hello';

-- name: backends_told_to_listen
SELECT count(*) FROM pg_stat_activity WHERE datname = %(dbname)s AND query ILIKE 'listen%%';

-- name: worker_connections
-- The connections of the database opened by pgflow-kombu's worker parts, with the start of
-- what each last ran (the transport's listener last ran a LISTEN).
SELECT application_name, left(query, 6) FROM pg_stat_activity
WHERE datname = %(dbname)s AND application_name LIKE 'pgflow-kombu%%';
