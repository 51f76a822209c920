-- What the dashboard needs from the database: step status changes as notifications (its live
-- feed) and the indexes its figures read, beside the runs API's (0045_runs_api.sql).
--
-- Step status changed: NOTIFY pgflow_kombu_step '<run_id>:<step_slug>:<status>' (ids only, as
-- pgflow_kombu_run: a payload is capped at 8000 bytes). With the run-finished notification this
-- is every change the dashboard draws; one LISTEN connection per dashboard process fans them out.
-- Sent only while a dashboard watches (a row of dashboard_listeners, refreshed by it while it has
-- browsers, expiring if it dies): every notifying commit takes a database-wide lock, so without a
-- dashboard open a status change costs one probe of that (normally empty) table, no NOTIFY.
-- A trigger on pgflow's table adds no column or row a pgflow 0.8.1 worker or client could meet.
CREATE TABLE IF NOT EXISTS pgflow_kombu.dashboard_listeners (
    listener_id uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_step_status() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgflow_kombu.dashboard_listeners AS l WHERE l.expires_at > now()) THEN
        PERFORM pg_notify('pgflow_kombu_step',
                          NEW.run_id::text || ':' || NEW.step_slug || ':' || NEW.status);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS pgflow_kombu_step_status ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_step_status
AFTER UPDATE OF status ON pgflow.step_states
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_step_status();

-- start_flow inserts the steps that start at once with status 'started' already.
DROP TRIGGER IF EXISTS pgflow_kombu_step_inserted ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_step_inserted
AFTER INSERT ON pgflow.step_states
FOR EACH ROW WHEN (NEW.status <> 'created')
EXECUTE FUNCTION pgflow_kombu.notify_step_status();

-- Per-minute counts of the last hour read ranges of completed_at and failed_at (started_at and
-- the keyset pages of runs use the runs API's indexes, 0045_runs_api.sql).
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_completed_idx
    ON pgflow.runs (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_failed_idx
    ON pgflow.runs (failed_at, flow_slug) WHERE failed_at IS NOT NULL;
-- Step duration percentiles of a flow's recent tasks.
CREATE INDEX IF NOT EXISTS pgflow_kombu_step_tasks_flow_completed_idx
    ON pgflow.step_tasks (flow_slug, completed_at) WHERE completed_at IS NOT NULL;
