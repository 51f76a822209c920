-- Observability of pgflow-kombu (schema pgflow_kombu): the trace context a run was started in,
-- and the per-flow queue figures that metrics read at scrape time.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- The W3C trace context (traceparent, tracestate) of the span that started a run, written in the
-- start_flow transaction when tracing is on, so that workers put their task spans in that trace.
-- Kept beside pgflow.runs, never in it; a deleted run takes its row along.
CREATE TABLE IF NOT EXISTS pgflow_kombu.run_trace_context (
    run_id uuid PRIMARY KEY REFERENCES pgflow.runs (run_id) ON DELETE CASCADE,
    traceparent text NOT NULL,
    tracestate text
);

-- Per flow: messages visible now in its queue and the age in seconds of the oldest of them
-- (NULL when none is visible). One query for every flow; each queue is read through its vt
-- index (the count) and its msg_id order (the oldest), never scanned whole for the age.
CREATE OR REPLACE FUNCTION pgflow_kombu.queue_depths()
RETURNS TABLE (flow_slug text, visible bigint, oldest_age double precision)
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT fl.flow_slug AS slug
        FROM pgflow.flows AS fl
        WHERE to_regclass(format('pgmq.%I', 'q_' || lower(fl.flow_slug))) IS NOT NULL
        ORDER BY fl.flow_slug
    LOOP
        flow_slug := f.slug;
        EXECUTE format(
            'SELECT (SELECT count(*) FROM pgmq.%1$I WHERE vt <= clock_timestamp()), '
            '(SELECT extract(epoch FROM clock_timestamp() - q.enqueued_at)::float8 '
            ' FROM pgmq.%1$I AS q WHERE q.vt <= clock_timestamp() ORDER BY q.msg_id LIMIT 1)',
            'q_' || lower(f.slug))
        INTO visible, oldest_age;
        RETURN NEXT;
    END LOOP;
END;
$$;
