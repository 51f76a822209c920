-- Runs API and live step events (schema pgflow_kombu): what listing, counting and watching runs
-- need, kept out of pgflow's contract.
--
-- Indexes on pgflow.runs. An index always lives in its table's schema, so these are extra
-- objects in schema pgflow; they carry the prefix pgflow_kombu_ (pgflow's own are idx_*), and
-- the schema-parity test leaves exactly that prefix out. A TypeScript worker or client never
-- sees an index, so nothing of pgflow's contract changes. They cover newest-first keyset
-- pagination on (started_at, run_id), per flow and per status, and input containment. None
-- holds a column that pgflow updates per step (remaining_steps, output), so those updates stay
-- HOT as before; only the status change at a run's end (already non-HOT: pgflow indexes status)
-- writes them. The started_at index includes status and flow_slug for index-only counts.
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_started_at
    ON pgflow.runs (started_at DESC, run_id DESC) INCLUDE (status, flow_slug);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_flow_started_at
    ON pgflow.runs (flow_slug, started_at DESC, run_id DESC) INCLUDE (status);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_status_started_at
    ON pgflow.runs (status, started_at DESC, run_id DESC) INCLUDE (flow_slug);
CREATE INDEX IF NOT EXISTS pgflow_kombu_runs_input
    ON pgflow.runs USING gin (input jsonb_path_ops);

-- A cancelled run: pgflow's row says it failed (so pgflow clients see it finished); our API
-- reads it as cancelled. The run control migration defines the same table.
CREATE TABLE IF NOT EXISTS pgflow_kombu.cancelled_runs (
    run_id uuid PRIMARY KEY REFERENCES pgflow.runs ON DELETE CASCADE,
    cancelled_at timestamptz NOT NULL DEFAULT now(),
    reason text
);

-- ---------------------------------------------------------------------------------------------
-- Live events
-- ---------------------------------------------------------------------------------------------
-- A client watching a run registers here (one row per watcher, refreshed while it watches,
-- deleted when it stops; a crashed watcher's row stops counting at expires_at). Triggers on
-- pgflow.runs / pgflow.step_states send NOTIFY pgflow_kombu_events '<run_id>' only for watched
-- runs: ids only (a NOTIFY payload is limited to 8000 bytes), the client reads the rows. An
-- unwatched run costs one index probe of this (normally empty) table per status change.
CREATE TABLE IF NOT EXISTS pgflow_kombu.watched_runs (
    run_id uuid NOT NULL,
    watcher_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, watcher_id)
);

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_watched_run() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w
               WHERE w.run_id = NEW.run_id AND w.expires_at > now()) THEN
        -- Identical payloads within a transaction are sent once.
        PERFORM pg_notify('pgflow_kombu_events', NEW.run_id::text);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS pgflow_kombu_step_event ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_step_event
AFTER UPDATE OF status ON pgflow.step_states
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_watched_run();

DROP TRIGGER IF EXISTS pgflow_kombu_run_event ON pgflow.runs;
CREATE TRIGGER pgflow_kombu_run_event
AFTER UPDATE OF status ON pgflow.runs
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_watched_run();

DROP TRIGGER IF EXISTS pgflow_kombu_cancel_event ON pgflow_kombu.cancelled_runs;
CREATE TRIGGER pgflow_kombu_cancel_event
AFTER INSERT ON pgflow_kombu.cancelled_runs
FOR EACH ROW
EXECUTE FUNCTION pgflow_kombu.notify_watched_run();
