-- Client helpers of pgflow-kombu (schema pgflow_kombu): delayed starts and flow deletion.
-- They call only the pgflow 0.8.1 contract, so they also work on an upstream-installed schema.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- Start a run whose first tasks stay invisible for delay_seconds (jobs enqueued "in" or "at").
-- The run row exists at once, so the run can be queried; only the messages wait. A step's own
-- start_delay is kept when it is longer.
CREATE OR REPLACE FUNCTION pgflow_kombu.start_flow_delayed(
    flow_slug text,
    input jsonb,
    run_id uuid DEFAULT NULL,
    delay_seconds integer DEFAULT 0
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    new_run_id uuid;
BEGIN
    IF delay_seconds < 0 THEN
        RAISE EXCEPTION 'delay_seconds must be >= 0, got %', delay_seconds;
    END IF;
    SELECT r.run_id INTO new_run_id
    FROM pgflow.start_flow(flow_slug => start_flow_delayed.flow_slug,
                           input => start_flow_delayed.input,
                           run_id => start_flow_delayed.run_id) AS r;
    IF delay_seconds > 0 THEN
        PERFORM pgmq.set_vt(t.flow_slug, t.message_id, delay_seconds)
        FROM pgflow.step_tasks AS t
        WHERE t.run_id = new_run_id AND t.status = 'queued' AND t.message_id IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM pgflow.steps AS s
              WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
                AND coalesce(s.opt_start_delay, 0) >= delay_seconds);
    END IF;
    RETURN new_run_id;
END;
$$;

-- Remove a flow with its runs, steps and queue. Returns false when there was no such flow.
CREATE OR REPLACE FUNCTION pgflow_kombu.delete_flow(flow_slug text) RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    -- Lock the definition so a concurrent start_flow cannot slip a run in between the deletes.
    PERFORM 1 FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Our flow-control rows (0060_limits.sql) go with the flow; the code writes its limits
    -- again when the flow is compiled anew.
    IF to_regclass('pgflow_kombu.run_controls') IS NOT NULL THEN
        DELETE FROM pgflow_kombu.run_controls AS c WHERE c.flow_slug = delete_flow.flow_slug;
        DELETE FROM pgflow_kombu.rate_buckets AS b WHERE b.flow_slug = delete_flow.flow_slug;
        DELETE FROM pgflow_kombu.flow_limits AS l WHERE l.flow_slug = delete_flow.flow_slug;
    END IF;
    DELETE FROM pgflow.step_tasks AS t WHERE t.flow_slug = delete_flow.flow_slug;
    DELETE FROM pgflow.step_states AS s WHERE s.flow_slug = delete_flow.flow_slug;
    DELETE FROM pgflow.runs AS r WHERE r.flow_slug = delete_flow.flow_slug;
    DELETE FROM pgflow.deps AS d WHERE d.flow_slug = delete_flow.flow_slug;
    DELETE FROM pgflow.steps AS s WHERE s.flow_slug = delete_flow.flow_slug;
    DELETE FROM pgflow.flows AS f WHERE f.flow_slug = delete_flow.flow_slug;
    IF EXISTS (SELECT 1 FROM pgmq.meta AS m WHERE m.queue_name = delete_flow.flow_slug) THEN
        PERFORM pgmq.drop_queue(delete_flow.flow_slug);
    END IF;
    RETURN true;
END;
$$;
