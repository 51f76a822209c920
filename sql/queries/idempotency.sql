-- Queries of deduplicated starts (pgflow_kombu.client.runs: start_flow(idempotency_key=...)).

-- name: reserve_idempotency_key
SELECT key_run_id, created FROM pgflow_kombu.reserve_idempotency_key(
    flow_slug => %(flow_slug)s, key => %(key)s, run_id => %(run_id)s::uuid,
    ttl_seconds => %(ttl_seconds)s::float8);
