-- Fewer trigger calls and index entries per job (the work our additions put on every run of
-- pgflow's tables; benchmarks/schema_costs.py measures each of them).
--
-- Events: one statement-level trigger per table and kind of change instead of a row-level one
-- per consumer. The set-based functions (0090-0092) change the states of a whole batch in one
-- statement: one call per batch, not several per row. Each reads the statement's rows from its
-- transition tables and sends what 0002, 0045 and 0085 sent, on the same conditions:
--   * a step's status changed (or a step was inserted already started): NOTIFY pgflow_kombu_step
--     '<run_id>:<step_slug>:<status>' while a dashboard listens (0085);
--   * a step's or a run's status changed: NOTIFY pgflow_kombu_events '<run_id>' for a watched
--     run (0045);
--   * a run completed or failed: NOTIFY pgflow_kombu_run '<run_id>:<status>' (0002).
-- Nobody listening costs one probe of dashboard_listeners and one of watched_runs (both normally
-- empty) per statement.

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_steps_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    -- start_flows inserts the steps that start at once with status 'started' already.
    IF EXISTS (SELECT 1 FROM pgflow_kombu.dashboard_listeners AS l WHERE l.expires_at > now()) THEN
        PERFORM pg_notify('pgflow_kombu_step', n.run_id::text || ':' || n.step_slug || ':' || n.status)
        FROM new_rows AS n
        WHERE n.status <> 'created';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_steps_updated() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgflow_kombu.dashboard_listeners AS l WHERE l.expires_at > now()) THEN
        PERFORM pg_notify('pgflow_kombu_step', n.run_id::text || ':' || n.step_slug || ':' || n.status)
        FROM new_rows AS n
        JOIN old_rows AS o ON o.run_id = n.run_id AND o.step_slug = n.step_slug
        WHERE o.status IS DISTINCT FROM n.status;
    END IF;
    IF EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w WHERE w.expires_at > now()) THEN
        -- Identical payloads within a transaction are sent once.
        PERFORM pg_notify('pgflow_kombu_events', n.run_id::text)
        FROM new_rows AS n
        JOIN old_rows AS o ON o.run_id = n.run_id AND o.step_slug = n.step_slug
        WHERE o.status IS DISTINCT FROM n.status
          AND EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w
                      WHERE w.run_id = n.run_id AND w.expires_at > now());
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_runs_updated() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    PERFORM pg_notify('pgflow_kombu_run', n.run_id::text || ':' || n.status)
    FROM new_rows AS n
    JOIN old_rows AS o ON o.run_id = n.run_id
    WHERE n.status IN ('completed', 'failed') AND o.status IS DISTINCT FROM n.status;
    IF EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w WHERE w.expires_at > now()) THEN
        PERFORM pg_notify('pgflow_kombu_events', n.run_id::text)
        FROM new_rows AS n
        JOIN old_rows AS o ON o.run_id = n.run_id
        WHERE o.status IS DISTINCT FROM n.status
          AND EXISTS (SELECT 1 FROM pgflow_kombu.watched_runs AS w
                      WHERE w.run_id = n.run_id AND w.expires_at > now());
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS pgflow_kombu_step_event ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_step_status ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_step_inserted ON pgflow.step_states;
DROP TRIGGER IF EXISTS pgflow_kombu_steps_updated ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_steps_updated
AFTER UPDATE ON pgflow.step_states
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION pgflow_kombu.notify_steps_updated();

DROP TRIGGER IF EXISTS pgflow_kombu_steps_inserted ON pgflow.step_states;
CREATE TRIGGER pgflow_kombu_steps_inserted
AFTER INSERT ON pgflow.step_states
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION pgflow_kombu.notify_steps_inserted();

DROP TRIGGER IF EXISTS pgflow_kombu_run_event ON pgflow.runs;
DROP TRIGGER IF EXISTS pgflow_kombu_run_finished ON pgflow.runs;
DROP TRIGGER IF EXISTS pgflow_kombu_runs_updated ON pgflow.runs;
CREATE TRIGGER pgflow_kombu_runs_updated
AFTER UPDATE ON pgflow.runs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION pgflow_kombu.notify_runs_updated();

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
