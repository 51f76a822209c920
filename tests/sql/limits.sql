-- Queries used only by the flow-control tests (tests/integration/test_flow_control.py).

-- name: limits_tasks_of_flow
SELECT t.run_id, t.status, t.attempts_count, t.output, t.error_message, r.status AS run_status
FROM pgflow.step_tasks AS t JOIN pgflow.runs AS r ON r.run_id = t.run_id
WHERE t.flow_slug = %(flow_slug)s ORDER BY t.run_id;

-- name: limits_unfinished_runs
SELECT count(*) FROM pgflow.runs WHERE flow_slug = %(flow_slug)s AND status = 'started';

-- name: limits_stored
SELECT step_slug, max_concurrency, rate_count, rate_period, keyed, key_field, priority, prioritized
FROM pgflow_kombu.flow_limits WHERE flow_slug = %(flow_slug)s ORDER BY step_slug;

-- name: limits_reject_task
SELECT pgflow_kombu.reject_task(
    run_id => %(run_id)s::uuid, step_slug => %(step_slug)s, task_index => %(task_index)s,
    error_message => %(error_message)s);

-- name: limits_run_controls
SELECT run_id::text, priority, keys FROM pgflow_kombu.run_controls ORDER BY run_id;

-- name: limits_task_by_message
SELECT t.status, t.attempts_count, r.input,
       extract(epoch FROM q.vt - clock_timestamp())::float8 AS visible_in
FROM pgflow.step_tasks AS t
JOIN pgflow.runs AS r ON r.run_id = t.run_id
JOIN pgmq.{} AS q ON q.msg_id = t.message_id
WHERE t.flow_slug = %(flow_slug)s AND t.message_id = %(msg_id)s;

-- name: limits_buckets
SELECT key, tokens FROM pgflow_kombu.rate_buckets WHERE flow_slug = %(flow_slug)s ORDER BY key;

-- name: limits_age_bucket
UPDATE pgflow_kombu.rate_buckets SET refilled_at = refilled_at - make_interval(secs => %(seconds)s)
WHERE flow_slug = %(flow_slug)s AND key = %(key)s;

-- name: limits_run_of_messages
SELECT message_id, run_id FROM pgflow.step_tasks
WHERE flow_slug = %(flow_slug)s AND message_id = ANY (%(ids)s::bigint[]);
