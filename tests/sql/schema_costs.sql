-- Queries of the benchmark of what our objects on pgflow's tables cost per job
-- (benchmarks/schema_costs.py).

-- name: costs_our_objects
-- Our triggers and indexes on pgflow's tables (named pgflow_kombu_*), with what drops each.
SELECT 'trigger' AS kind, t.tgname AS name, c.relname AS table_name
FROM pg_trigger AS t
JOIN pg_class AS c ON c.oid = t.tgrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'pgflow' AND t.tgname LIKE 'pgflow\_kombu\_%%' AND NOT t.tgisinternal
  AND c.relname IN ('runs', 'step_states', 'step_tasks')
UNION ALL
SELECT 'index', i.relname, c.relname
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
JOIN pg_class AS c ON c.oid = x.indrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = 'pgflow' AND i.relname LIKE 'pgflow\_kombu\_%%'
ORDER BY 1, 3, 2;

-- name: costs_drop_trigger
DROP TRIGGER {} ON pgflow.{};

-- name: costs_drop_index
DROP INDEX pgflow.{};

-- name: costs_vacuum
-- Before each measured batch: the tables a job writes (the queue and archive tables are the
-- placeholders), so that dead rows do not pile up until autovacuum comes, at a different time in
-- each database.
VACUUM pgflow.runs, pgflow.step_states, pgflow.step_tasks, pgmq.{}, pgmq.{};
