-- Queries of the schedule and deduplication tests.

-- name: runs_of_flow
SELECT count(*) FROM pgflow.runs WHERE flow_slug = %(flow_slug)s;

-- name: completed_runs_of_flow
SELECT count(*) FROM pgflow.runs WHERE flow_slug = %(flow_slug)s AND status = 'completed';

-- name: idempotency_key_rows
SELECT count(*) FROM pgflow_kombu.idempotency_keys WHERE flow_slug = %(flow_slug)s;

-- name: delete_one_run
WITH t AS (DELETE FROM pgflow.step_tasks WHERE run_id = %(run_id)s),
     s AS (DELETE FROM pgflow.step_states WHERE run_id = %(run_id)s)
DELETE FROM pgflow.runs WHERE run_id = %(run_id)s;

-- name: set_next_tick
UPDATE pgflow_kombu.schedules SET next_tick_at = %(at)s WHERE name = %(name)s;

-- name: ticks_of
SELECT tick_at, manual, run_id FROM pgflow_kombu.schedule_ticks
WHERE schedule_name = %(name)s ORDER BY tick_at;

-- name: db_clock
SELECT clock_timestamp();

-- name: tick_lag
-- Seconds from each tick's time to the start of its run (for the printed measurement only).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - tick_at)),
       max(extract(epoch FROM started_at - tick_at))
FROM pgflow_kombu.schedule_ticks WHERE schedule_name = %(name)s AND NOT manual;

-- name: idempotency_keys_of_flow
SELECT key, run_id FROM pgflow_kombu.idempotency_keys WHERE flow_slug = %(flow_slug)s ORDER BY key;

-- name: start_flows_idempotent_raw
SELECT ordinal, run_id, created FROM pgflow_kombu.start_flows_idempotent(
    flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[],
    idempotency_keys => %(idempotency_keys)s::text[])
ORDER BY ordinal;
