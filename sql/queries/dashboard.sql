-- Queries of the dashboard's live feed (pgflow_kombu.dashboard.live).

-- name: listen
-- Step status changes (0085_dashboard.sql) and finished runs (0002_pgflow_kombu_core.sql).
LISTEN pgflow_kombu_step; LISTEN pgflow_kombu_run;

-- name: register_listener
-- This dashboard watches: step status changes are notified until expires_at (refreshed).
INSERT INTO pgflow_kombu.dashboard_listeners (listener_id, expires_at)
VALUES (%(listener_id)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (listener_id) DO UPDATE SET expires_at = EXCLUDED.expires_at;

-- name: unregister_listener
-- Also drops rows of dashboards that died without unregistering.
DELETE FROM pgflow_kombu.dashboard_listeners
WHERE listener_id = %(listener_id)s OR expires_at < now() - interval '1 hour';
