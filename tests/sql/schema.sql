-- Catalog queries that describe a schema, for comparing two installs.

-- name: schema_columns
SELECT table_schema, table_name, column_name, data_type, column_default, is_nullable
FROM information_schema.columns
WHERE table_schema = ANY(%(schemas)s) AND table_name NOT LIKE 'q\_%%' AND table_name NOT LIKE 'a\_%%'
ORDER BY 1, 2, 3;

-- name: schema_constraints
SELECT n.nspname, rel.relname, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c
JOIN pg_class rel ON rel.oid = c.conrelid
JOIN pg_namespace n ON n.oid = rel.relnamespace
WHERE n.nspname = ANY(%(schemas)s)
ORDER BY 1, 2, 3;

-- name: schema_indexes
SELECT schemaname, tablename, indexname, indexdef
FROM pg_indexes WHERE schemaname = ANY(%(schemas)s)
ORDER BY 1, 2, 3;

-- name: schema_functions
SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
       pg_get_function_result(p.oid), md5(pg_get_functiondef(p.oid))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%(schemas)s) AND p.prokind IN ('f', 'p')
ORDER BY 1, 2, 3;

-- name: schema_triggers
SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND NOT t.tgisinternal
ORDER BY 1, 2, 3;
