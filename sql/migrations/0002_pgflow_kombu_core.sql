-- Core objects of pgflow-kombu (schema pgflow_kombu): run-finished notifications and stalled-task
-- recovery. They rely only on the pgflow 0.8.1 contract, so they work the same on a pgflow schema
-- installed by upstream pgflow and on ours.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- ---------------------------------------------------------------------------------------------
-- Run finished: NOTIFY pgflow_kombu_run '<run_id>:<status>'
-- ---------------------------------------------------------------------------------------------
-- Ids only: a NOTIFY payload is capped at 8000 bytes, and every notifying commit takes a
-- database-wide lock, so only the event a waiting client needs is sent (one per finished run).

CREATE OR REPLACE FUNCTION pgflow_kombu.notify_run_finished() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM pg_notify('pgflow_kombu_run', NEW.run_id::text || ':' || NEW.status);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS pgflow_kombu_run_finished ON pgflow.runs;
CREATE TRIGGER pgflow_kombu_run_finished
AFTER UPDATE OF status ON pgflow.runs
FOR EACH ROW
WHEN (NEW.status IN ('completed', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION pgflow_kombu.notify_run_finished();

-- ---------------------------------------------------------------------------------------------
-- Stalled-task recovery
-- ---------------------------------------------------------------------------------------------
-- pgflow 0.8.1 leaves a task 'started' forever when its worker dies. We recover such tasks, but
-- never one that its worker may still be running, and a silent heartbeat alone does not prove a
-- worker dead: a 0.8.1 TypeScript edge worker heartbeats between batches only (its loop awaits
-- the whole batch), so it is silent for as long as its longest running task. Only workers known
-- to heartbeat while they work are judged by their heartbeat: ours (from a thread), which list
-- their worker ids in pgflow_kombu.known_workers. A 'started' task is stalled when:
--   * its worker is a known one: the task was claimed, and the worker last heartbeated, more
--     than heartbeat_timeout ago;
--   * any other worker: its step's timeout (the step's opt_timeout, else the flow's) plus
--     foreign_margin has passed since started_at (the rule of upstream pgflow's own requeue
--     since 0.13, which reads the flow's timeout only) AND that worker has not heartbeated for
--     heartbeat_timeout either;
--   * no worker (its pgflow.workers row was deleted, which nulls last_worker_id, so whose it was
--     is unknown): the step-timeout rule.
-- A stalled task is handed to pgflow.fail_task with a '[STALLED] ...' error: it is retried with
-- the usual backoff (attempts_count is kept: the lost attempt counts) or, out of attempts, fails
-- its step and run. Message visibility plays no part: a TypeScript worker's running task is
-- visible again after 2 s.

-- Worker ids (one per served queue) of pgflow-kombu workers, which heartbeat while they run
-- tasks. Kept in our schema, not as a marker in pgflow.workers.function_name: that is free text
-- any worker sets (a TypeScript worker's is its edge function's name), and pgflow's tables then
-- hold nothing a TypeScript tool does not know. No foreign key to pgflow.workers (it would make
-- a plain TRUNCATE of that table fail): recovery prunes ids whose row is gone.
CREATE TABLE IF NOT EXISTS pgflow_kombu.known_workers (
    worker_id uuid PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- The started tasks that are stalled by the rule above, each with why (the error message that
-- recovery gives fail_task). A plain SQL function (no SET clause) so that it is inlined into its
-- callers' queries, their filters reaching the step_tasks indexes (every name is qualified).
CREATE OR REPLACE FUNCTION pgflow_kombu.stalled_tasks(
    heartbeat_timeout interval,
    foreign_margin interval
) RETURNS TABLE (
    run_id uuid, step_slug text, task_index integer, flow_slug text, started_at timestamptz,
    reason text
)
LANGUAGE sql STABLE AS $$
    SELECT t.run_id, t.step_slug, t.task_index, t.flow_slug, t.started_at, j.reason
    FROM pgflow.step_tasks AS t
    JOIN pgflow.steps AS st ON st.flow_slug = t.flow_slug AND st.step_slug = t.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
    LEFT JOIN pgflow.workers AS w ON w.worker_id = t.last_worker_id
    LEFT JOIN pgflow_kombu.known_workers AS k ON k.worker_id = t.last_worker_id
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN w.last_heartbeat_at >= now() - stalled_tasks.heartbeat_timeout THEN NULL
            WHEN k.worker_id IS NOT NULL THEN
                CASE WHEN t.started_at < now() - stalled_tasks.heartbeat_timeout THEN
                    '[STALLED] worker ' || t.last_worker_id || ' stopped heartbeating ('
                    || coalesce('last heartbeat at ' || w.last_heartbeat_at,
                                'its worker row is gone')
                    || ')'
                END
            WHEN t.started_at < now() - make_interval(secs => coalesce(st.opt_timeout,
                                                                       f.opt_timeout))
                                - stalled_tasks.foreign_margin THEN
                '[STALLED] worker ' || coalesce(t.last_worker_id::text, '(unknown)')
                || coalesce(' is silent (last heartbeat at ' || w.last_heartbeat_at || ')',
                            ' is gone (its worker row was deleted)')
                || ' and the task, started at ' || t.started_at || ', outlived its timeout of '
                || coalesce(st.opt_timeout, f.opt_timeout) || ' s by more than '
                || extract(epoch FROM stalled_tasks.foreign_margin)::float8 || ' s'
        END AS reason
    ) AS j
    WHERE t.status = 'started'
      AND t.started_at < now() - least(stalled_tasks.heartbeat_timeout,
                                       stalled_tasks.foreign_margin)
      AND j.reason IS NOT NULL
$$;

-- Safe to run from several workers at once: each run is locked first (as complete_task and
-- fail_task do, so lock order matches theirs) and each task row after it, both with SKIP LOCKED;
-- a busy run is left for the next round. Returns the number of tasks handed over.
CREATE OR REPLACE FUNCTION pgflow_kombu.recover_stalled_tasks(
    heartbeat_timeout interval DEFAULT '30 seconds',
    flow_slug text DEFAULT NULL,
    max_tasks integer DEFAULT 1000,
    foreign_margin interval DEFAULT '30 seconds'
) RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_task record;
    v_reason text;
    v_count integer := 0;
BEGIN
    IF recover_stalled_tasks.heartbeat_timeout IS NULL
       OR recover_stalled_tasks.heartbeat_timeout <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_timeout must be a positive interval, got %',
            coalesce(recover_stalled_tasks.heartbeat_timeout::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF recover_stalled_tasks.foreign_margin IS NULL
       OR recover_stalled_tasks.foreign_margin < interval '0' THEN
        RAISE EXCEPTION 'foreign_margin must be an interval of 0 or more, got %',
            coalesce(recover_stalled_tasks.foreign_margin::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    DELETE FROM pgflow_kombu.known_workers AS k
    WHERE NOT EXISTS (SELECT 1 FROM pgflow.workers AS w WHERE w.worker_id = k.worker_id);

    FOR v_task IN
        SELECT s.run_id, s.step_slug, s.task_index
        FROM pgflow_kombu.stalled_tasks(recover_stalled_tasks.heartbeat_timeout,
                                        recover_stalled_tasks.foreign_margin) AS s
        WHERE recover_stalled_tasks.flow_slug IS NULL
              OR s.flow_slug = recover_stalled_tasks.flow_slug
        ORDER BY s.started_at
        LIMIT recover_stalled_tasks.max_tasks
    LOOP
        PERFORM 1 FROM pgflow.runs r WHERE r.run_id = v_task.run_id
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        -- Judge again under the locks: the worker may have heartbeated or reported meanwhile.
        PERFORM 1 FROM pgflow.step_tasks AS t
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT s.reason INTO v_reason
        FROM pgflow_kombu.stalled_tasks(recover_stalled_tasks.heartbeat_timeout,
                                        recover_stalled_tasks.foreign_margin) AS s
        WHERE s.run_id = v_task.run_id AND s.step_slug = v_task.step_slug
          AND s.task_index = v_task.task_index;
        CONTINUE WHEN v_reason IS NULL;

        PERFORM pgflow.fail_task(
            run_id => v_task.run_id,
            step_slug => v_task.step_slug,
            task_index => v_task.task_index,
            error_message => v_reason
        );
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;

-- The same, with the timeout in seconds (as the worker's configuration holds it).
CREATE OR REPLACE FUNCTION pgflow_kombu.recover_stalled_tasks(stalled_after double precision)
RETURNS integer
LANGUAGE sql SET search_path = '' AS $$
    SELECT pgflow_kombu.recover_stalled_tasks(
        heartbeat_timeout => make_interval(secs => recover_stalled_tasks.stalled_after)
    )
$$;
