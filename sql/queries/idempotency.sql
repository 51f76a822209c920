-- Queries of deduplicated starts (pgflow_kombu.client.runs: start_flow(idempotency_key=...),
-- start_many(idempotency_keys=...)).

-- name: reserve_idempotency_key
SELECT key_run_id, created FROM pgflow_kombu.reserve_idempotency_key(
    flow_slug => %(flow_slug)s, key => %(key)s, run_id => %(run_id)s::uuid,
    ttl_seconds => %(ttl_seconds)s::float8);

-- name: start_flows_idempotent
-- start_many(idempotency_keys=...): the keys of a batch reserved and the runs of the new ones
-- started in one statement (0099_idempotent_batches.sql); see client.start_flows.
SELECT ordinal, run_id, created FROM pgflow_kombu.start_flows_idempotent(
    flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[],
    idempotency_keys => %(idempotency_keys)s::text[], ttl_seconds => %(ttl_seconds)s::float8,
    priority => %(priority)s::int, keys => %(keys)s::jsonb[],
    traceparent => %(traceparent)s, tracestate => %(tracestate)s)
ORDER BY ordinal;
