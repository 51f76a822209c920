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

-- Why a task is stalled by the rule above (the error message recovery gives fail_task), or NULL
-- when it is not.
CREATE OR REPLACE FUNCTION pgflow_kombu.stall_reason(
    task pgflow.step_tasks,
    heartbeat_timeout interval,
    foreign_margin interval
) RETURNS text
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT CASE
        WHEN (task).status <> 'started' OR (task).started_at IS NULL THEN NULL
        WHEN w.last_heartbeat_at >= now() - heartbeat_timeout THEN NULL
        WHEN k.worker_id IS NOT NULL THEN
            CASE WHEN (task).started_at < now() - heartbeat_timeout THEN
                '[STALLED] worker ' || (task).last_worker_id || ' stopped heartbeating ('
                || coalesce('last heartbeat at ' || w.last_heartbeat_at, 'its worker row is gone')
                || ')'
            END
        WHEN (task).started_at < now() - make_interval(secs => s.timeout) - foreign_margin THEN
            '[STALLED] worker ' || coalesce((task).last_worker_id::text, '(unknown)')
            || coalesce(' is silent (last heartbeat at ' || w.last_heartbeat_at || ')',
                        ' is gone (its worker row was deleted)')
            || ' and the task, started at ' || (task).started_at || ', outlived its timeout of '
            || s.timeout || ' s by more than ' || extract(epoch FROM foreign_margin)::float8 || ' s'
    END
    FROM (
        SELECT coalesce(st.opt_timeout, f.opt_timeout) AS timeout
        FROM pgflow.steps AS st JOIN pgflow.flows AS f ON f.flow_slug = st.flow_slug
        WHERE st.flow_slug = (task).flow_slug AND st.step_slug = (task).step_slug
    ) AS s
    LEFT JOIN pgflow.workers AS w ON w.worker_id = (task).last_worker_id
    LEFT JOIN pgflow_kombu.known_workers AS k ON k.worker_id = (task).last_worker_id
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
    v_row pgflow.step_tasks;
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
        SELECT t.run_id, t.step_slug, t.task_index
        FROM pgflow.step_tasks AS t
        WHERE t.status = 'started'
          AND t.started_at < now() - least(recover_stalled_tasks.heartbeat_timeout,
                                           recover_stalled_tasks.foreign_margin)
          AND (recover_stalled_tasks.flow_slug IS NULL
               OR t.flow_slug = recover_stalled_tasks.flow_slug)
          AND pgflow_kombu.stall_reason(t, recover_stalled_tasks.heartbeat_timeout,
                                        recover_stalled_tasks.foreign_margin) IS NOT NULL
        ORDER BY t.started_at
        LIMIT recover_stalled_tasks.max_tasks
    LOOP
        PERFORM 1 FROM pgflow.runs r WHERE r.run_id = v_task.run_id
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        -- Judge again under the locks: the worker may have heartbeated or reported meanwhile.
        SELECT t.* INTO v_row
        FROM pgflow.step_tasks AS t
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_reason := pgflow_kombu.stall_reason(v_row, recover_stalled_tasks.heartbeat_timeout,
                                              recover_stalled_tasks.foreign_margin);
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
