-- Queries of the set-based differential tests (tests/integration/test_differential_set_based.py).

-- name: setb_start_flows
SELECT ordinal, run_id FROM pgflow_kombu.start_flows(
    flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[], run_ids => %(run_ids)s::uuid[])
ORDER BY ordinal;

-- name: setb_report_tasks
SELECT ordinal, outcome, detail, retrying, run_status
FROM pgflow_kombu.report_tasks(%(reports)s::jsonb)
ORDER BY ordinal;

-- name: setb_task_state
SELECT status, attempts_count, last_worker_id FROM pgflow.step_tasks
WHERE run_id = %(run_id)s AND step_slug = %(step_slug)s AND task_index = %(task_index)s;

-- name: setb_run_status
SELECT status FROM pgflow.runs WHERE run_id = %(run_id)s;

-- name: setb_waiting_on_lock
SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity WHERE pid = %(pid)s;

-- name: setb_track_functions
SET LOCAL track_functions = 'pl';

-- name: setb_function_calls
-- Calls of pgflow_kombu functions in the current transaction.
SELECT coalesce(sum(calls), 0)::integer AS calls FROM pg_stat_xact_user_functions
WHERE schemaname = 'pgflow_kombu' AND funcname = ANY (%(names)s::text[]);

-- name: setb_bench_start_flows
SELECT run_id FROM pgflow_kombu.start_flows(flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[]);

-- name: setb_bench_read
SELECT msg_id FROM pgmq.read(queue_name => %(flow_slug)s, vt => 30, qty => %(n)s);

-- name: setb_bench_claim_tasks
SELECT run_id, step_slug, task_index, attempt
FROM pgflow_kombu.claim_tasks(flow_slug => %(flow_slug)s, msg_ids => %(msg_ids)s::bigint[],
                              worker_id => %(worker_id)s::uuid);

-- name: setb_bench_report_set
SELECT outcome FROM pgflow_kombu.report_tasks(%(reports)s::jsonb);

-- name: setb_bench_report_per_row
SELECT outcome FROM public.bench_report_tasks_per_row(%(reports)s::jsonb);

-- name: setb_start_flows_controlled
SELECT ordinal, run_id FROM pgflow_kombu.start_flows(
    flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[], run_ids => %(run_ids)s::uuid[],
    delay_seconds => %(delay_seconds)s, priority => %(priority)s::int,
    keys => %(keys)s::jsonb[], traceparent => %(traceparent)s, tracestate => %(tracestate)s)
ORDER BY ordinal;

-- name: setb_start_flow_controlled
SELECT pgflow_kombu.start_flow_controlled(
    flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid,
    delay_seconds => %(delay_seconds)s, priority => %(priority)s::int, keys => %(keys)s::jsonb)
    AS run_id;

-- name: setb_save_trace
INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
VALUES (%(run_id)s, %(traceparent)s, %(tracestate)s);

-- name: setb_controls
SELECT c.run_id, c.flow_slug, c.priority, c.keys, t.traceparent, t.tracestate
FROM pgflow_kombu.run_controls AS c
LEFT JOIN pgflow_kombu.run_trace_context AS t ON t.run_id = c.run_id
ORDER BY c.run_id;

-- name: setb_flow_limits
SELECT flow_slug, step_slug, prioritized FROM pgflow_kombu.flow_limits ORDER BY 1, 2;

-- name: setb_set_condition
SELECT pgflow_kombu.set_step_condition(
    flow_slug => %(flow_slug)s, step_slug => %(step_slug)s, if_pattern => %(if_pattern)s::jsonb,
    if_not_pattern => NULL, when_unmet => %(when_unmet)s, when_exhausted => NULL);

-- name: setb_skipped
SELECT run_id, step_slug, skip_reason FROM pgflow_kombu.skipped_steps ORDER BY 1, 2;
