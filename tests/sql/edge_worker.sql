-- The SQL of the pgflow 0.8.1 TypeScript edge worker (Queries and PgflowSqlClient), statement for
-- statement, for tests/support/edge_worker.py.

-- name: edge_worker_started
INSERT INTO pgflow.workers (queue_name, worker_id, function_name)
VALUES (%(queue_name)s, %(worker_id)s, %(function_name)s)
RETURNING *;

-- name: edge_worker_heartbeat
UPDATE pgflow.workers AS w
SET last_heartbeat_at = clock_timestamp()
WHERE w.worker_id = %(worker_id)s
RETURNING (w.deprecated_at IS NOT NULL) AS is_deprecated;

-- name: edge_worker_read
SELECT *
FROM pgmq.read_with_poll(
  queue_name => %(queue_name)s,
  vt => %(vt)s,
  qty => %(qty)s,
  max_poll_seconds => %(max_poll_seconds)s,
  poll_interval_ms => %(poll_interval_ms)s
);

-- name: edge_worker_start_tasks
SELECT *
FROM pgflow.start_tasks(
  flow_slug => %(flow_slug)s,
  msg_ids => %(msg_ids)s::bigint[],
  worker_id => %(worker_id)s::uuid
);

-- name: edge_worker_complete_task
SELECT pgflow.complete_task(
  run_id => %(run_id)s::uuid,
  step_slug => %(step_slug)s::text,
  task_index => %(task_index)s::int,
  output => %(output)s::jsonb
);

-- name: edge_worker_fail_task
SELECT pgflow.fail_task(
  run_id => %(run_id)s::uuid,
  step_slug => %(step_slug)s::text,
  task_index => %(task_index)s::int,
  error_message => %(error_message)s::text
);
