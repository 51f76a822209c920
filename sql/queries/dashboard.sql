-- Queries of the dashboard's live feed (pgflow_kombu.dashboard.live).

-- name: listen
-- Step status changes (0085_dashboard.sql) and finished runs (0002_pgflow_kombu_core.sql).
LISTEN pgflow_kombu_step; LISTEN pgflow_kombu_run;
