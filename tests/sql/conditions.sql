-- Queries of the conditional-step tests (tests/integration/test_conditions_sql.py).

-- name: conditions_contains
SELECT %(document)s::jsonb @> %(pattern)s::jsonb AS contains;

-- name: conditions_skipped_steps
SELECT step_slug, skip_reason, error_message FROM pgflow_kombu.skipped_steps
WHERE run_id = %(run_id)s ORDER BY step_slug;

-- name: conditions_set_step_condition
SELECT pgflow_kombu.set_step_condition(%(flow_slug)s, %(step_slug)s, %(if_pattern)s::jsonb);

-- name: conditions_task_messages
SELECT step_slug, task_index, message_id FROM pgflow.step_tasks
WHERE run_id = %(run_id)s ORDER BY step_slug, task_index;

-- name: conditions_hooked_functions
-- pgflow's functions that consult pgflow_kombu's condition tables (benchmarks/conditions.py).
SELECT count(*) AS n FROM pg_proc
WHERE pronamespace = 'pgflow'::regnamespace
  AND (prosrc LIKE '%%step_conditions%%' OR prosrc LIKE '%%skipped_steps%%');

-- name: conditions_count_rows
SELECT (SELECT count(*) FROM pgflow_kombu.step_conditions),
       (SELECT count(*) FROM pgflow_kombu.skipped_steps);
