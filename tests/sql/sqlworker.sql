-- A minimal pgflow worker in SQL, for tests of the client that must not depend on our worker.

-- name: sqlworker_register
INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
VALUES (%(worker_id)s, %(queue)s, 'tests.sqlworker') ON CONFLICT DO NOTHING;

-- name: sqlworker_read
SELECT msg_id FROM pgmq.read(queue_name => %(queue)s, vt => 30, qty => 100);

-- name: sqlworker_claim
SELECT run_id, step_slug, task_index, input
FROM pgflow.start_tasks(flow_slug => %(queue)s, msg_ids => %(msg_ids)s, worker_id => %(worker_id)s);

-- name: sqlworker_complete
SELECT 1 FROM pgflow.complete_task(run_id => %(run_id)s, step_slug => %(step_slug)s,
                                   task_index => %(task_index)s, output => %(output)s);

-- name: sqlworker_fail
SELECT 1 FROM pgflow.fail_task(run_id => %(run_id)s, step_slug => %(step_slug)s,
                               task_index => %(task_index)s, error_message => %(error)s);

-- name: queue_messages
-- Every message of a queue table (pgmq.q_<name>, given as an identifier), visible or not.
SELECT msg_id, message, read_ct, round(extract(epoch FROM vt - now()))::int AS delay
FROM pgmq.{} ORDER BY msg_id;

-- name: count_runs
SELECT count(*) FROM pgflow.runs;
