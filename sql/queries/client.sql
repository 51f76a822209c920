-- Queries of the client (pgflow_kombu.client): starting runs, reading their state, flows admin.

-- name: start_flow
SELECT run_id FROM pgflow.start_flow(
    flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid);

-- name: start_flows
-- Many runs of one flow in one statement (0090_set_based.sql): priority and keys (one per
-- input) when flow control applies, the trace context when a span starts them.
SELECT ordinal, run_id FROM pgflow_kombu.start_flows(
    flow_slug => %(flow_slug)s, inputs => %(inputs)s::jsonb[], priority => %(priority)s::int,
    keys => %(keys)s::jsonb[], traceparent => %(traceparent)s, tracestate => %(tracestate)s)
ORDER BY ordinal;

-- name: start_flow_delayed
SELECT pgflow_kombu.start_flow_delayed(
    flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid,
    delay_seconds => %(delay_seconds)s);

-- name: get_run
SELECT * FROM pgflow_kombu.run_view WHERE run_id = %(run_id)s;

-- name: get_step_states
-- A skipped step (pgflow_kombu.skipped_steps) reads 'skipped' here; pgflow's row says completed.
SELECT ss.run_id, ss.flow_slug, ss.step_slug,
       CASE WHEN k.run_id IS NULL THEN ss.status ELSE 'skipped' END AS status,
       ss.remaining_tasks, ss.initial_tasks, ss.remaining_deps,
       coalesce(ss.error_message, k.error_message) AS error_message,
       ss.created_at, ss.started_at, ss.completed_at, ss.failed_at, k.skip_reason
FROM pgflow.step_states AS ss
JOIN pgflow.steps AS s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
LEFT JOIN pgflow_kombu.skipped_steps AS k ON k.run_id = ss.run_id AND k.step_slug = ss.step_slug
WHERE ss.run_id = %(run_id)s
ORDER BY s.step_index;

-- name: get_step_tasks
SELECT * FROM pgflow.step_tasks WHERE run_id = %(run_id)s ORDER BY step_slug, task_index;

-- name: flow_exists
SELECT EXISTS (SELECT 1 FROM pgflow.flows WHERE flow_slug = %(flow_slug)s);

-- name: get_flow
SELECT * FROM pgflow.flows WHERE flow_slug = %(flow_slug)s;

-- name: list_flows
SELECT * FROM pgflow.flows ORDER BY flow_slug;

-- name: get_flow_steps
-- Steps in definition order with their dependencies in the order they were given.
SELECT s.step_slug, s.step_type, s.step_index, s.opt_max_attempts, s.opt_base_delay,
       s.opt_timeout, s.opt_start_delay,
       coalesce(ARRAY(
           SELECT d.dep_slug FROM pgflow.deps AS d
           JOIN pgflow.steps AS ds ON ds.flow_slug = d.flow_slug AND ds.step_slug = d.dep_slug
           WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug
           ORDER BY ds.step_index), '{}') AS deps
FROM pgflow.steps AS s
WHERE s.flow_slug = %(flow_slug)s
ORDER BY s.step_index;

-- name: lock_flow_slug
-- Serialises changes to one flow's definition until the transaction ends (upsert, compile).
SELECT pg_advisory_xact_lock(hashtext('pgflow_kombu.flow'), hashtext(%(flow_slug)s));

-- name: create_flow
SELECT flow_slug FROM pgflow.create_flow(
    flow_slug => %(flow_slug)s,
    max_attempts => coalesce(%(max_attempts)s::int, 3),
    base_delay => coalesce(%(base_delay)s::int, 5),
    timeout => coalesce(%(timeout)s::int, 60));

-- name: add_step
SELECT step_slug FROM pgflow.add_step(
    flow_slug => %(flow_slug)s,
    step_slug => %(step_slug)s,
    deps_slugs => %(deps)s::text[],
    max_attempts => %(max_attempts)s::int,
    base_delay => %(base_delay)s::int,
    timeout => %(timeout)s::int,
    start_delay => %(start_delay)s::int,
    step_type => %(step_type)s);

-- name: conditions_supported
SELECT pgflow_kombu.conditions_supported();

-- name: set_step_condition
SELECT pgflow_kombu.set_step_condition(
    flow_slug => %(flow_slug)s,
    step_slug => %(step_slug)s,
    if_pattern => %(if_pattern)s::jsonb,
    if_not_pattern => %(if_not_pattern)s::jsonb,
    when_unmet => %(when_unmet)s,
    when_exhausted => %(when_exhausted)s);

-- name: get_step_conditions
SELECT step_slug, if_pattern, if_not_pattern, when_unmet, when_exhausted
FROM pgflow_kombu.step_conditions
WHERE flow_slug = %(flow_slug)s;

-- name: delete_flow
SELECT pgflow_kombu.delete_flow(%(flow_slug)s);

-- name: list_workers
SELECT * FROM pgflow.workers
WHERE %(include_stale)s OR last_heartbeat_at > now() - make_interval(secs => %(stale_after)s)
ORDER BY started_at DESC;

-- name: health
SELECT
    (SELECT count(*) FROM pgflow.flows) AS flows,
    (SELECT count(*) FROM pgflow.runs WHERE status = 'started') AS runs_started,
    (SELECT count(*) FROM pgflow.workers
     WHERE deprecated_at IS NULL AND last_heartbeat_at > now() - interval '30 seconds') AS live_workers,
    (SELECT max(version) FROM pgflow_kombu.migrations) AS schema_version;

-- name: listen_runs
LISTEN pgflow_kombu_run;

-- name: start_flow_controlled
SELECT pgflow_kombu.start_flow_controlled(
    flow_slug => %(flow_slug)s, input => %(input)s::jsonb, run_id => %(run_id)s::uuid,
    delay_seconds => %(delay_seconds)s, priority => %(priority)s::int, keys => %(keys)s::jsonb);

-- name: set_flow_limits
SELECT pgflow_kombu.set_flow_limits(flow_slug => %(flow_slug)s, limits => %(limits)s::jsonb);
