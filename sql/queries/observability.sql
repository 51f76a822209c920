-- Queries of observability (pgflow_kombu.observability): scrape-time metrics, trace context.

-- name: queue_depths
SELECT flow_slug, visible, oldest_age FROM pgflow_kombu.queue_depths();

-- name: live_workers
-- Workers per queue that are not deprecated and heartbeated within stale_after seconds.
SELECT queue_name, count(*) AS live
FROM pgflow.workers
WHERE deprecated_at IS NULL AND last_heartbeat_at > now() - make_interval(secs => %(stale_after)s)
GROUP BY queue_name;

-- name: trace_contexts
SELECT run_id, traceparent, tracestate
FROM pgflow_kombu.run_trace_context
WHERE run_id = ANY(%(run_ids)s::uuid[]);

-- name: start_flow_traced
-- client.start_flow, and the trace context of the span that starts the run, in one statement.
WITH run AS (
    SELECT run_id FROM pgflow.start_flow(
        flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid)
), saved AS (
    INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
    SELECT run.run_id, %(traceparent)s, %(tracestate)s FROM run
)
SELECT run_id FROM run;

-- name: start_flow_delayed_traced
WITH run AS (
    SELECT pgflow_kombu.start_flow_delayed(
        flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid,
        delay_seconds => %(delay_seconds)s) AS run_id
), saved AS (
    INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
    SELECT run.run_id, %(traceparent)s, %(tracestate)s FROM run
)
SELECT run_id FROM run;

-- name: start_flow_controlled_traced
-- client.start_flow_controlled (priority, concurrency keys), and the trace context.
WITH run AS (
    SELECT pgflow_kombu.start_flow_controlled(
        flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid,
        delay_seconds => %(delay_seconds)s, priority => %(priority)s::int,
        keys => %(keys)s::jsonb) AS run_id
), saved AS (
    INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
    SELECT run.run_id, %(traceparent)s, %(tracestate)s FROM run
)
SELECT run_id FROM run;
