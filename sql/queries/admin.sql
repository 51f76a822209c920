-- Server-level administration: databases for the embedded server and the test templates.
-- Queries with {} placeholders take identifiers through psycopg.sql.

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(dbname)s);

-- name: create_database
CREATE DATABASE {};

-- name: create_database_from_template
CREATE DATABASE {} TEMPLATE {};

-- name: drop_database
DROP DATABASE IF EXISTS {} WITH (FORCE);

-- name: database_comment
SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %(dbname)s;

-- name: comment_on_database
COMMENT ON DATABASE {} IS {};

-- name: mark_template
ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;

-- name: unmark_template
ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true;

-- name: server_lock
SELECT pg_advisory_lock(hashtext(%(key)s));

-- name: server_unlock
SELECT pg_advisory_unlock(hashtext(%(key)s));
