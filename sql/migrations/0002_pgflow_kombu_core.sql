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
-- A task is stalled when it is 'started', was claimed more than heartbeat_timeout ago, and the
-- worker that claimed it has not heartbeated for heartbeat_timeout (or its row is gone). Such a
-- task is handed to pgflow.fail_task with a '[STALLED] ...' error: it is retried with the usual
-- backoff (attempts_count is kept: the lost attempt counts) or, out of attempts, fails its step
-- and run. Message visibility plays no part: a TypeScript worker's running task is visible again
-- after 2 s and must not run twice.
--
-- Safe to run from several workers at once: each run is locked first (as complete_task and
-- fail_task do, so lock order matches theirs) and each task row after it, both with SKIP LOCKED;
-- a busy run is left for the next round. Returns the number of tasks handed over.

CREATE OR REPLACE FUNCTION pgflow_kombu.recover_stalled_tasks(
    heartbeat_timeout interval DEFAULT '30 seconds',
    flow_slug text DEFAULT NULL,
    max_tasks integer DEFAULT 1000
) RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_cutoff timestamptz := now() - recover_stalled_tasks.heartbeat_timeout;
    v_task record;
    v_count integer := 0;
BEGIN
    IF recover_stalled_tasks.heartbeat_timeout IS NULL
       OR recover_stalled_tasks.heartbeat_timeout <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_timeout must be a positive interval, got %',
            coalesce(recover_stalled_tasks.heartbeat_timeout::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR v_task IN
        SELECT t.run_id, t.step_slug, t.task_index, t.last_worker_id, w.last_heartbeat_at
        FROM pgflow.step_tasks t
        LEFT JOIN pgflow.workers w ON w.worker_id = t.last_worker_id
        WHERE t.status = 'started'
          AND t.started_at < v_cutoff
          AND (w.worker_id IS NULL OR w.last_heartbeat_at < v_cutoff)
          AND (recover_stalled_tasks.flow_slug IS NULL
               OR t.flow_slug = recover_stalled_tasks.flow_slug)
        ORDER BY t.started_at
        LIMIT recover_stalled_tasks.max_tasks
    LOOP
        PERFORM 1 FROM pgflow.runs r WHERE r.run_id = v_task.run_id
        FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        -- Re-check under the locks: the worker may have heartbeated or reported meanwhile.
        PERFORM 1
        FROM pgflow.step_tasks t
        LEFT JOIN pgflow.workers w ON w.worker_id = t.last_worker_id
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
          AND t.status = 'started'
          AND t.started_at < v_cutoff
          AND (w.worker_id IS NULL OR w.last_heartbeat_at < v_cutoff)
        FOR UPDATE OF t SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;

        PERFORM pgflow.fail_task(
            run_id => v_task.run_id,
            step_slug => v_task.step_slug,
            task_index => v_task.task_index,
            error_message => CASE
                WHEN v_task.last_heartbeat_at IS NULL THEN
                    '[STALLED] worker ' || coalesce(v_task.last_worker_id::text, '(unknown)')
                    || ' stopped heartbeating (its worker row is gone)'
                ELSE
                    '[STALLED] worker ' || v_task.last_worker_id
                    || ' stopped heartbeating (last heartbeat at ' || v_task.last_heartbeat_at
                    || ')'
            END
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
