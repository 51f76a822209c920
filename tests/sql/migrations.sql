-- name: namespace_exists
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(name)s);

-- name: half_pgflow_schema
CREATE SCHEMA pgflow;
CREATE TABLE pgflow.flows (flow_slug text PRIMARY KEY);

-- name: tamper_checksum
UPDATE pgflow_kombu.migrations SET checksum = 'edited' WHERE version = 1;

-- name: record_future_migration
INSERT INTO pgflow_kombu.migrations (version, name, checksum, how)
VALUES (9998, 'from_the_future', 'x', 'applied');

-- name: create_limited_role
CREATE ROLE {} LOGIN;

-- name: drop_role
DROP ROLE IF EXISTS {};
