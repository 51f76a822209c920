-- Queries of the migration runner (pgflow_kombu.db.migrations).

-- name: lock
SELECT pg_advisory_xact_lock(hashtext('pgflow_kombu.migrations'));

-- name: create_migrations_table
CREATE SCHEMA IF NOT EXISTS pgflow_kombu;
CREATE TABLE IF NOT EXISTS pgflow_kombu.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    how text NOT NULL CHECK (how IN ('applied', 'adopted')),
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- name: migrations_table_exists
SELECT to_regclass('pgflow_kombu.migrations') IS NOT NULL;

-- name: recorded
SELECT version, name, checksum, how, applied_at FROM pgflow_kombu.migrations ORDER BY version;

-- name: record
INSERT INTO pgflow_kombu.migrations (version, name, checksum, how)
VALUES (%(version)s, %(name)s, %(checksum)s, %(how)s);

-- name: pgmq_state
SELECT
    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq') AS has_schema,
    (SELECT extversion FROM pg_extension WHERE extname = 'pgmq') AS ext_version,
    (SELECT default_version FROM pg_available_extensions WHERE name = 'pgmq') AS available_version;

-- name: create_pgmq_extension
CREATE EXTENSION IF NOT EXISTS pgmq;

-- name: pgflow_objects
-- What of the pgflow 0.8.1 schema a database already holds (to adopt an upstream install).
SELECT
    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgflow') AS has_schema,
    ARRAY(
        SELECT t.name FROM unnest(ARRAY['flows', 'steps', 'deps', 'runs', 'step_states',
                                        'step_tasks', 'workers']) AS t(name)
        WHERE to_regclass('pgflow.' || t.name) IS NULL
    ) AS missing_tables,
    ARRAY(
        SELECT f.name FROM unnest(ARRAY['create_flow', 'add_step', 'start_flow', 'start_tasks',
                                        'complete_task', 'fail_task', 'set_vt_batch',
                                        'get_run_with_states']) AS f(name)
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'pgflow' AND p.proname = f.name)
    ) AS missing_functions,
    EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = 'pgflow' AND table_name = 'steps' AND column_name = 'step_type'
    ) AS has_map_steps;
