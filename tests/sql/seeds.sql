-- Queries used only by the tests of the seed functions (tests/integration/test_seed_*.py).

-- name: seeds_row_counts
-- What a refused call must leave unchanged: flows, steps, runs, tasks and queued messages.
SELECT (SELECT count(*) FROM pgflow.flows) AS flows,
       (SELECT count(*) FROM pgflow.steps) AS steps,
       (SELECT count(*) FROM pgflow.runs) AS runs,
       (SELECT count(*) FROM pgflow.step_tasks) AS tasks,
       (SELECT count(*) FROM pgmq.meta) AS queues;

-- name: seeds_heartbeats
-- Last heartbeat of each worker row, by queue.
SELECT queue_name, worker_id, last_heartbeat_at FROM pgflow.workers ORDER BY queue_name, started_at;

-- name: seeds_silence_run_notifications
-- Runs finish without their NOTIFY, as behind a pooler that drops notifications.
ALTER TABLE pgflow.runs DISABLE TRIGGER pgflow_kombu_runs_updated;

-- name: seeds_finish_run
UPDATE pgflow.runs
SET status = 'completed', remaining_steps = 0, completed_at = now(), output = '{"done": true}'
WHERE run_id = %(run_id)s;

-- name: seeds_listen_runs
LISTEN pgflow_kombu_run;
