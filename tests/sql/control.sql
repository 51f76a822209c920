-- Queries used only by the run-control tests (tests/integration/test_control*.py) and the
-- counter invariants (tests/reference/invariants.py).

-- name: inv_remaining_steps
-- A run's remaining_steps counts its steps not completed (a failure decrements nothing).
SELECT r.run_id, r.remaining_steps,
       (SELECT count(*) FROM pgflow.step_states AS ss
        WHERE ss.run_id = r.run_id AND ss.status <> 'completed') AS expected
FROM pgflow.runs AS r
WHERE r.remaining_steps <> (SELECT count(*) FROM pgflow.step_states AS ss
                            WHERE ss.run_id = r.run_id AND ss.status <> 'completed');

-- name: inv_remaining_deps
-- A step's remaining_deps counts its dependencies not completed.
SELECT ss.run_id, ss.step_slug, ss.remaining_deps,
       (SELECT count(*) FROM pgflow.deps AS d
        JOIN pgflow.step_states AS ds ON ds.run_id = ss.run_id AND ds.step_slug = d.dep_slug
        WHERE d.flow_slug = ss.flow_slug AND d.step_slug = ss.step_slug
          AND ds.status <> 'completed') AS expected
FROM pgflow.step_states AS ss
WHERE ss.remaining_deps <> (SELECT count(*) FROM pgflow.deps AS d
                            JOIN pgflow.step_states AS ds
                              ON ds.run_id = ss.run_id AND ds.step_slug = d.dep_slug
                            WHERE d.flow_slug = ss.flow_slug AND d.step_slug = ss.step_slug
                              AND ds.status <> 'completed');

-- name: inv_remaining_tasks
-- A step that started has initial_tasks tasks and remaining_tasks = those not completed; a step
-- that never started (created, or failed before starting on an unmet condition) has no tasks
-- and no remaining_tasks.
SELECT ss.run_id, ss.step_slug, ss.status, ss.initial_tasks, ss.remaining_tasks,
       count(t.*) AS tasks, count(t.*) FILTER (WHERE t.status = 'completed') AS completed
FROM pgflow.step_states AS ss
LEFT JOIN pgflow.step_tasks AS t ON t.run_id = ss.run_id AND t.step_slug = ss.step_slug
GROUP BY ss.run_id, ss.step_slug, ss.status, ss.initial_tasks, ss.remaining_tasks, ss.started_at
HAVING ((ss.status = 'created' OR (ss.status = 'failed' AND ss.started_at IS NULL))
        AND (ss.remaining_tasks IS NOT NULL OR count(t.*) > 0))
    OR (ss.status <> 'created' AND NOT (ss.status = 'failed' AND ss.started_at IS NULL)
        AND ss.remaining_tasks IS DISTINCT FROM
            ss.initial_tasks - count(t.*) FILTER (WHERE t.status = 'completed'))
    OR (ss.status = 'started' AND count(t.*) <> ss.initial_tasks);

-- name: inv_statuses
-- Statuses agree: a started run has no failure recorded; a failed run has failed_at; a
-- completed run has every step completed; a completed step every task completed.
SELECT r.run_id, NULL::text AS step_slug, r.status FROM pgflow.runs AS r
WHERE (r.status = 'started' AND (r.failed_at IS NOT NULL OR r.completed_at IS NOT NULL
       OR EXISTS (SELECT 1 FROM pgflow.step_states AS ss
                  WHERE ss.run_id = r.run_id AND ss.status = 'failed')
       OR EXISTS (SELECT 1 FROM pgflow.step_tasks AS t
                  JOIN pgflow.step_states AS ss
                    ON ss.run_id = t.run_id AND ss.step_slug = t.step_slug
                  WHERE t.run_id = r.run_id AND t.status = 'failed'
                    AND ss.status <> 'completed')))
   OR (r.status = 'failed' AND r.failed_at IS NULL)
   OR (r.status = 'completed' AND (r.remaining_steps <> 0 OR EXISTS (
       SELECT 1 FROM pgflow.step_states AS ss
       WHERE ss.run_id = r.run_id AND ss.status <> 'completed')))
UNION ALL
SELECT ss.run_id, ss.step_slug, ss.status FROM pgflow.step_states AS ss
WHERE ss.status = 'completed' AND EXISTS (
    SELECT 1 FROM pgflow.step_tasks AS t
    WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug AND t.status <> 'completed');

-- name: inv_messages
-- The live messages of one queue table (placeholder: pgmq.q_<flow>) against the tasks: every
-- queued task of a started run has its message live; every live message belongs to a queued or
-- started task of a started run.
SELECT 'queued task without a live message' AS problem, t.run_id, t.step_slug, t.task_index
FROM pgflow.step_tasks AS t JOIN pgflow.runs AS r ON r.run_id = t.run_id
WHERE t.flow_slug = %(flow_slug)s AND r.status = 'started' AND t.status = 'queued'
  AND NOT EXISTS (SELECT 1 FROM pgmq.{} AS q WHERE q.msg_id = t.message_id)
UNION ALL
SELECT 'live message of no running task', (q.message ->> 'run_id')::uuid, q.message ->> 'step_slug',
       (q.message ->> 'task_index')::int
FROM pgmq.{} AS q
WHERE NOT EXISTS (
    SELECT 1 FROM pgflow.step_tasks AS t JOIN pgflow.runs AS r ON r.run_id = t.run_id
    WHERE t.message_id = q.msg_id AND t.status IN ('queued', 'started') AND r.status = 'started');

-- name: has_skipped_steps
SELECT to_regclass('pgflow_kombu.skipped_steps') IS NOT NULL;

-- name: skipped_steps
SELECT run_id, step_slug FROM pgflow_kombu.skipped_steps;

-- name: has_realtime_log
SELECT to_regclass('realtime.sent_events') IS NOT NULL;

-- name: flow_slugs
SELECT flow_slug FROM pgflow.flows ORDER BY flow_slug;

-- name: tables_with_run_id
-- Every table of pgflow and pgflow_kombu that has a run_id column (orphan checks).
SELECT c.table_schema, c.table_name FROM information_schema.columns AS c
JOIN information_schema.tables AS t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema IN ('pgflow', 'pgflow_kombu') AND c.column_name = 'run_id'
  AND t.table_type = 'BASE TABLE'
ORDER BY 1, 2;

-- name: orphans_of
-- Rows of a table (placeholder) whose run is gone.
SELECT count(*) AS n FROM {} AS x
WHERE x.run_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.run_id = x.run_id);

-- name: queue_tables
SELECT table_name FROM information_schema.tables
WHERE table_schema = 'pgmq' AND (table_name LIKE 'q\_%%' OR table_name LIKE 'a\_%%')
ORDER BY 1;

-- name: messages_of_gone_runs
-- Messages of a queue or archive table (placeholder) whose run is gone.
SELECT count(*) AS n FROM pgmq.{} AS m
WHERE NOT EXISTS (SELECT 1 FROM pgflow.runs AS r WHERE r.run_id::text = m.message ->> 'run_id');

-- name: count_rows
SELECT count(*) AS n FROM {};

-- name: age_finished_runs
-- Moves the given finished runs (and their rows) back in time by the given seconds, as if they
-- had finished that long ago.
WITH moved AS (
    UPDATE pgflow.runs SET started_at = started_at - make_interval(secs => %(seconds)s),
        completed_at = completed_at - make_interval(secs => %(seconds)s),
        failed_at = failed_at - make_interval(secs => %(seconds)s)
    WHERE run_id = ANY (%(run_ids)s::uuid[])
    RETURNING run_id
)
SELECT count(*) FROM moved;

-- name: age_archive
-- Moves every archived message of a table (placeholder: pgmq.a_<flow>) back in time.
UPDATE pgmq.{} SET archived_at = archived_at - make_interval(secs => %(seconds)s);

-- name: cancelled_row
SELECT run_id, cancelled_at, reason FROM pgflow_kombu.cancelled_runs WHERE run_id = %(run_id)s;

-- name: pgflow_run_row
SELECT status, failed_at IS NOT NULL AS has_failed_at FROM pgflow.runs WHERE run_id = %(run_id)s;

-- name: get_run_with_states
-- What pgflow's TypeScript client reads (PgflowSqlClient.getRunWithStates).
SELECT pgflow.get_run_with_states(%(run_id)s::uuid) AS data;

-- name: run_tasks
SELECT step_slug, task_index, status, attempts_count, output, error_message, message_id
FROM pgflow.step_tasks WHERE run_id = %(run_id)s ORDER BY step_slug, task_index;

-- name: run_steps
SELECT step_slug, status, remaining_tasks, remaining_deps, error_message
FROM pgflow.step_states WHERE run_id = %(run_id)s ORDER BY step_slug;

-- name: live_messages
SELECT count(*) AS n FROM pgmq.{};

-- name: counter_bump
-- A per-key counter in the database that handlers in any process can share.
INSERT INTO control_test_counters AS c (key, n) VALUES (%(key)s, 1)
ON CONFLICT (key) DO UPDATE SET n = c.n + 1
RETURNING n;

-- name: counter_table
CREATE TABLE IF NOT EXISTS control_test_counters (key text PRIMARY KEY, n integer NOT NULL);

-- name: bench_prune_fill
-- %(n)s finished runs of flow bench_prune_old (steps a -> b) that completed 10 days ago, in one
-- set-based statement: each step completed with one task whose message sits in the archive
-- (message ids from %(first_msg)s on, clear of the queue's own sequence).
WITH runs AS (
    INSERT INTO pgflow.runs (run_id, flow_slug, status, input, output, remaining_steps,
                             started_at, completed_at)
    SELECT gen_random_uuid(), 'bench_prune_old', 'completed', jsonb_build_object('i', i),
           '{"b": 1}', 0, now() - interval '10 days',
           now() - interval '10 days' + interval '1 second'
    FROM generate_series(1, %(n)s) AS i
    RETURNING run_id, started_at, completed_at
), numbered AS (
    SELECT r.run_id, r.started_at, r.completed_at, s.slug,
           %(first_msg)s::bigint + row_number() OVER () AS msg_id
    FROM runs AS r CROSS JOIN (VALUES ('a'), ('b')) AS s(slug)
), states AS (
    INSERT INTO pgflow.step_states (flow_slug, run_id, step_slug, status, remaining_tasks,
                                    remaining_deps, initial_tasks, created_at, started_at,
                                    completed_at)
    SELECT 'bench_prune_old', n.run_id, n.slug, 'completed', 0, 0, 1, n.started_at,
           n.started_at, n.completed_at
    FROM numbered AS n
), tasks AS (
    INSERT INTO pgflow.step_tasks (flow_slug, run_id, step_slug, message_id, status,
                                   attempts_count, output, queued_at, started_at, completed_at)
    SELECT 'bench_prune_old', n.run_id, n.slug, n.msg_id, 'completed', 1, '1', n.started_at,
           n.started_at, n.completed_at
    FROM numbered AS n
)
INSERT INTO pgmq.a_bench_prune_old (msg_id, read_ct, enqueued_at, archived_at, vt, message)
SELECT n.msg_id, 1, n.started_at, n.completed_at, n.completed_at,
       jsonb_build_object('flow_slug', 'bench_prune_old', 'run_id', n.run_id,
                          'step_slug', n.slug, 'task_index', 0)
FROM numbered AS n;

-- name: bench_prune_analyze
ANALYZE;

-- name: bench_prune_completed
-- Runs of the measured flow completed so far.
SELECT count(*) FROM pgflow.runs WHERE flow_slug = 'bench_prune_job' AND status = 'completed';

-- name: bench_prune_latencies
-- Seconds from start_flow to the run's completion, of the given runs (the server's clock).
SELECT extract(epoch FROM completed_at - started_at)::float8
FROM pgflow.runs WHERE run_id = ANY (%(run_ids)s::uuid[]) AND status = 'completed';

-- name: bench_prune_sizes
SELECT (SELECT count(*) FROM pgflow.runs) AS runs,
       (SELECT count(*) FROM pgflow.step_tasks) AS tasks,
       (SELECT count(*) FROM pgmq.a_bench_prune_old) AS archived;
