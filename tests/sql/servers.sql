-- Settings of the server the tests run on.

-- name: max_connections
SELECT current_setting('max_connections')::int;

-- name: set_max_connections
-- Takes effect at the next server start.
ALTER SYSTEM SET max_connections = {};
