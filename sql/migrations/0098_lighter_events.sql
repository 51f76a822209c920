-- Fewer trigger calls and index entries per job (the work our additions put on every run of
-- pgflow's tables; benchmarks/schema_costs.py measures each of them).
--
-- Events: one trigger per table and kind of change instead of one per consumer. A step status
-- change (or a step inserted already started) calls one function that answers both the run
-- watchers of 0045 (NOTIFY pgflow_kombu_events '<run_id>', status changes only) and the dashboards
-- of 0085 (NOTIFY pgflow_kombu_step '<run_id>:<step_slug>:<status>'), with one query for both
-- "is anyone listening" probes. A run status change calls one function that sends the
-- run-finished NOTIFY of 0002 and the watcher event of 0045. The notifications, their payloads
-- and the conditions they are sent on are the same as before.

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_step_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_dashboard boolean;
    v_watched boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM pgflow_kombu.dashboard_listeners AS l
                   WHERE l.expires_at > now()),
           TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w
                                        WHERE w.run_id = NEW.run_id AND w.expires_at > now())
    INTO v_dashboard, v_watched;
    IF v_dashboard THEN
        PERFORM pg_notify('pgflow_kombu_step',
                          NEW.run_id::text || ':' || NEW.step_slug || ':' || NEW.status);
    END IF;
    IF v_watched THEN
        -- Identical payloads within a transaction are sent once.
        PERFORM pg_notify('pgflow_kombu_events', NEW.run_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_run_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF NEW.status IN ('completed', 'failed') THEN
        PERFORM pg_notify('pgflow_kombu_run', NEW.run_id::text || ':' || NEW.status);
    END IF;
    IF EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w
               WHERE w.run_id = NEW.run_id AND w.expires_at > now()) THEN
        PERFORM pg_notify('pgflow_kombu_events', NEW.run_id::text);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS pgflow_kombu_step_event ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_step_status ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_step_inserted ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_step_change ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_step_change
AFTER UPDATE OF status ON pgflow.step_states
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_step_change();

-- start_flow inserts the steps that start at once with status 'started' already.
CREATE TRIGGER pgflow_kombu_step_inserted
AFTER INSERT ON pgflow.step_states
FOR EACH ROW WHEN (NEW.status <> 'created')
EXECUTE FUNCTION pgflow_kombu.notify_step_change();

DROP TRIGGER IF EXISTS pgflow_kombu_run_event ON pgflow.runs;
DROP TRIGGER IF EXISTS pgflow_kombu_run_finished ON pgflow.runs;
DROP TRIGGER IF EXISTS pgflow_kombu_run_change ON pgflow.runs;
CREATE TRIGGER pgflow_kombu_run_change
AFTER UPDATE OF status ON pgflow.runs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_run_change();

DROP FUNCTION IF EXISTS pgflow_kombu.notify_step_status();
DROP FUNCTION IF EXISTS pgflow_kombu.notify_run_finished();

-- Runs by status: a run gets an entry of every index of pgflow.runs when it starts and again when
-- it finishes (that update changes status, which pgflow indexes, so it is never HOT). The index
-- for status filters leaves completed runs out: a successful run costs it one entry, not two. A
-- filter on 'completed' (most runs) reads the newest-first index of all runs instead, whose
-- entries carry the status.
DROP INDEX IF EXISTS pgflow.pgflow_kombu_runs_status_started_at;
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_not_completed
    ON pgflow.runs (status, started_at DESC, run_id DESC) INCLUDE (flow_slug)
    WHERE status <> 'completed';

-- Runs' inputs: a GIN index gets an entry per path of a run's input when the run starts and again
-- when it finishes, on every job, for a filter (find_runs input_contains) that reads runs newest
-- first well enough within a time window. It is created on request: `pgflow-kombu db
-- input-index` (pgflow_kombu.db.input_index), CONCURRENTLY, under the same name.
DROP INDEX IF EXISTS pgflow.pgflow_kombu_runs_input;
