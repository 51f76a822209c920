-- What the dashboard needs from the database: step status changes as notifications (its live
-- feed) and indexes that keep its pages fast on millions of runs.
--
-- Step status changed: NOTIFY pgflow_kombu_step '<run_id>:<step_slug>:<status>' (ids only, as
-- pgflow_kombu_run: a payload is capped at 8000 bytes). With the run-finished notification this
-- is every change the dashboard draws; one LISTEN connection per dashboard process fans them out.
-- A trigger on pgflow's table adds no column or row a pgflow 0.8.1 worker or client could meet.

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_step_status() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('pgflow_kombu_step',
                      NEW.run_id::text || ':' || NEW.step_slug || ':' || NEW.status);
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

-- Keyset pages of runs, newest first by (started_at, run_id), overall and per flow or status;
-- per-minute counts of the last hour read ranges of started_at, completed_at and failed_at.
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_started_idx
    ON pgflow.runs (started_at, run_id);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_flow_started_idx
    ON pgflow.runs (flow_slug, started_at, run_id);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_status_started_idx
    ON pgflow.runs (status, started_at, run_id);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_completed_idx
    ON pgflow.runs (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_failed_idx
    ON pgflow.runs (failed_at, flow_slug) WHERE failed_at IS NOT NULL;
-- Step duration percentiles of a flow's recent tasks.
CREATE INDEX IF NOT EXISTS pgflow_kombu_step_tasks_flow_completed_idx
    ON pgflow.step_tasks (flow_slug, completed_at) WHERE completed_at IS NOT NULL;
