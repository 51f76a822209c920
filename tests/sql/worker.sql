-- Queries used only by the worker's tests (tests/integration/test_worker*.py).

-- name: worker_create_flow
SELECT flow_slug FROM pgflow.create_flow(
    flow_slug => %(slug)s, max_attempts => %(max_attempts)s, base_delay => %(base_delay)s,
    timeout => %(timeout)s);

-- name: worker_add_step
SELECT step_slug FROM pgflow.add_step(
    flow_slug => %(slug)s, step_slug => %(step)s, deps_slugs => %(deps)s::text[],
    timeout => %(timeout)s::int, step_type => %(step_type)s);

-- name: worker_start_flow
SELECT run_id FROM pgflow.start_flow(flow_slug => %(slug)s, input => %(input)s::jsonb);

-- name: worker_tasks
SELECT step_slug, task_index, status, attempts_count, output, error_message
FROM pgflow.step_tasks WHERE run_id = %(run_id)s ORDER BY step_slug, task_index;

-- name: worker_run_status
SELECT status FROM pgflow.runs WHERE run_id = %(run_id)s;

-- name: worker_lock_run
-- Holds a run's row until the transaction ends, as a concurrent complete_task/fail_task does.
SELECT 1 FROM pgflow.runs WHERE run_id = %(run_id)s FOR UPDATE;

-- name: worker_short_lock_timeout
SET lock_timeout = '100ms';

-- name: worker_database_lock_timeout
-- New sessions of the database (placeholder) give up waiting for a lock after 100 ms.
ALTER DATABASE {} SET lock_timeout = '100ms';

-- name: worker_message_delays
-- Seconds until each message of a queue table (placeholder: pgmq.q_<name>) is visible again.
SELECT msg_id, extract(epoch FROM vt - clock_timestamp())::float8 AS delay
FROM pgmq.{} ORDER BY msg_id;

-- name: worker_explode_on_output
-- Makes complete_task raise for an output of "explode" (a completion the database refuses).
CREATE FUNCTION pgflow.test_explode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' AND NEW.output = '"explode"'::jsonb THEN
        RAISE EXCEPTION 'refusing this output';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_explode BEFORE UPDATE ON pgflow.step_tasks
FOR EACH ROW EXECUTE FUNCTION pgflow.test_explode();

-- name: worker_set_heartbeat_age
UPDATE pgflow.workers SET last_heartbeat_at = now() - make_interval(secs => %(age)s)
WHERE worker_id = ANY(%(worker_ids)s::uuid[]);

-- name: worker_rows
SELECT worker_id, queue_name, function_name, deprecated_at IS NOT NULL AS deprecated
FROM pgflow.workers ORDER BY queue_name;

-- name: worker_deprecate_all
UPDATE pgflow.workers SET deprecated_at = now();

-- name: worker_ids_of_pid
-- The pgflow.workers rows of one worker process (function_name ends with ':<pid>').
SELECT worker_id FROM pgflow.workers WHERE function_name LIKE '%%:' || %(pid)s::text;

-- name: worker_started_by
SELECT run_id, step_slug, task_index FROM pgflow.step_tasks
WHERE status = 'started' AND last_worker_id = ANY(%(worker_ids)s::uuid[]);

-- name: worker_run_summary
-- Per run: its status and each of its tasks' (status, attempts) as JSON, for end-state checks.
SELECT r.run_id, r.status,
       coalesce(jsonb_agg(jsonb_build_array(t.step_slug, t.task_index, t.status, t.attempts_count)
                ORDER BY t.step_slug, t.task_index) FILTER (WHERE t.run_id IS NOT NULL), '[]')
FROM pgflow.runs AS r LEFT JOIN pgflow.step_tasks AS t ON t.run_id = r.run_id
WHERE r.run_id = ANY(%(run_ids)s::uuid[])
GROUP BY r.run_id, r.status;

-- name: worker_message_ids
-- The pgmq message of each task of a run, by step and task index.
SELECT step_slug, task_index, message_id
FROM pgflow.step_tasks WHERE run_id = %(run_id)s ORDER BY step_slug, task_index;

-- name: worker_queue_ids
-- msg_ids in a pgmq table (placeholder: pgmq.q_<name> or pgmq.a_<name>).
SELECT msg_id FROM pgmq.{} ORDER BY msg_id;

-- name: worker_task_probe
-- One task's state, with the database's clock at the time of reading.
SELECT status, attempts_count, last_worker_id, error_message, started_at, completed_at,
       now() AS read_at
FROM pgflow.step_tasks
WHERE run_id = %(run_id)s AND step_slug = %(step_slug)s AND task_index = 0;

-- name: worker_last_heartbeat
SELECT max(last_heartbeat_at) FROM pgflow.workers WHERE worker_id = ANY(%(worker_ids)s::uuid[]);

-- name: worker_db_now
SELECT now();
