-- Run control of pgflow-kombu (schema pgflow_kombu): cancel, retry, delete and prune runs.
--
-- How a cancelled run is represented. pgflow 0.8.1's runs.status allows only started, completed
-- and failed, and its functions and clients know only those, so a cancelled run is a *failed*
-- run in pgflow's tables plus a row in pgflow_kombu.cancelled_runs saying it was cancelled, when
-- and why. Failed is the state that means "finished, stop" to everything of 0.8.1: start_tasks
-- never claims a task of a failed run, complete_task ignores a late completion, start_ready_steps
-- starts nothing, and a TypeScript client sees a finished run with a '[CANCELLED] ...' error.
-- Our API reads the extra row and reports the status as 'cancelled'. Cancelling does what a final
-- fail_task does, for the whole run at once: the run and its started steps fail (failed_at, the
-- error on each step), remaining counts are left as they are (failure decrements nothing), the
-- run's queued and started messages are archived, and the run:failed event is sent. Its queued
-- and started tasks fail too, so a late report of a running attempt is stale and stalled-task
-- recovery has nothing to take.
--
-- Every function locks the run row first, as pgflow's complete_task and fail_task do, so it is
-- serialised with them and takes locks in the same order.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

CREATE TABLE IF NOT EXISTS pgflow_kombu.cancelled_runs (
    run_id uuid PRIMARY KEY REFERENCES pgflow.runs (run_id) ON DELETE CASCADE,
    cancelled_at timestamptz NOT NULL DEFAULT now(),
    reason text
);

-- Cancel a started run. Returns true when it was cancelled, false when it had already finished,
-- NULL when there is no such run.
CREATE OR REPLACE FUNCTION pgflow_kombu.cancel_run(run_id uuid, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_flow text;
    v_status text;
    v_now timestamptz;
    v_error text := '[CANCELLED] ' || coalesce(nullif(cancel_run.reason, ''), 'run cancelled');
    v_step text;
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
BEGIN
    SELECT r.flow_slug, r.status INTO v_flow, v_status
    FROM pgflow.runs AS r WHERE r.run_id = cancel_run.run_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status <> 'started' THEN
        RETURN false;
    END IF;
    -- Taken after the lock: tasks queued by a commit we waited for are older than it.
    v_now := clock_timestamp();

    PERFORM pgflow_kombu.queue_archive(v_flow, ids)
    FROM (
        SELECT array_agg(t.message_id ORDER BY t.message_id) AS ids
        FROM pgflow.step_tasks AS t
        WHERE t.run_id = cancel_run.run_id AND t.status IN ('queued', 'started')
          AND t.message_id IS NOT NULL
    ) AS m
    WHERE ids IS NOT NULL;

    UPDATE pgflow.step_tasks AS t
    SET status = 'failed', failed_at = v_now, error_message = v_error
    WHERE t.run_id = cancel_run.run_id AND t.status IN ('queued', 'started');

    FOR v_step IN
        UPDATE pgflow.step_states AS ss
        SET status = 'failed', failed_at = v_now, error_message = v_error
        WHERE ss.run_id = cancel_run.run_id AND ss.status = 'started'
        RETURNING ss.step_slug
    LOOP
        IF v_rt THEN
            PERFORM realtime.send(
                jsonb_build_object(
                    'event_type', 'step:failed',
                    'run_id', cancel_run.run_id,
                    'step_slug', v_step,
                    'status', 'failed',
                    'error_message', v_error,
                    'failed_at', v_now
                ),
                'step:' || v_step || ':failed',
                'pgflow:run:' || cancel_run.run_id,
                false
            );
        END IF;
    END LOOP;

    UPDATE pgflow.runs AS r SET status = 'failed', failed_at = v_now
    WHERE r.run_id = cancel_run.run_id;
    INSERT INTO pgflow_kombu.cancelled_runs (run_id, cancelled_at, reason)
    VALUES (cancel_run.run_id, v_now, cancel_run.reason)
    ON CONFLICT ON CONSTRAINT cancelled_runs_pkey DO UPDATE
    SET cancelled_at = EXCLUDED.cancelled_at, reason = EXCLUDED.reason;

    IF v_rt THEN
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'run:failed',
                'run_id', cancel_run.run_id,
                'flow_slug', v_flow,
                'status', 'failed',
                'error_message', v_error,
                'failed_at', v_now
            ),
            'run:failed',
            'pgflow:run:' || cancel_run.run_id,
            false
        );
    END IF;
    RETURN true;
END;
$$;

-- Retry a failed (or cancelled) run from where it stopped. Every task that did not complete, of
-- every step that had started, is queued again as a fresh task (attempts_count 0, no error, a new
-- message, visible at once); the old message of each leaves the archive, superseded. Failed
-- steps are started again (one that failed before starting, on an unmet condition, goes back to
-- created and is started, its condition judged again, by start_ready_steps), the run is started
-- again (failed_at cleared, no longer cancelled). Skipped steps (completed in pgflow's row, see
-- 0070_conditions.sql) stay skipped.
-- Completed steps and tasks keep their outputs; steps that never started are still 'created'
-- with their remaining_deps, and start when their dependencies complete. remaining_steps and
-- remaining_tasks need no change: a failure never decremented them. Returns the number of tasks
-- queued again, NULL when there is no such run; raises when the run is not failed.
CREATE OR REPLACE FUNCTION pgflow_kombu.retry_run(run_id uuid)
RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_flow text;
    v_status text;
    v_now timestamptz;
    v_slugs text[];
    v_indexes integer[];
    v_old bigint[];
    v_messages jsonb[];
    v_delays integer[];
    v_new bigint[];
    v_archive regclass;
    v_unstarted boolean;
BEGIN
    SELECT r.flow_slug, r.status INTO v_flow, v_status
    FROM pgflow.runs AS r WHERE r.run_id = retry_run.run_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status <> 'failed' THEN
        RAISE EXCEPTION 'run % is %, not failed: only a failed or cancelled run can be retried',
            retry_run.run_id, v_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    v_now := clock_timestamp();

    SELECT array_agg(t.step_slug ORDER BY t.step_slug, t.task_index),
           array_agg(t.task_index ORDER BY t.step_slug, t.task_index),
           array_agg(t.message_id ORDER BY t.step_slug, t.task_index)
               FILTER (WHERE t.message_id IS NOT NULL),
           array_agg(jsonb_build_object('flow_slug', v_flow, 'run_id', retry_run.run_id,
                                        'step_slug', t.step_slug, 'task_index', t.task_index)
                     ORDER BY t.step_slug, t.task_index),
           array_agg(0)
    INTO v_slugs, v_indexes, v_old, v_messages, v_delays
    FROM pgflow.step_tasks AS t
    JOIN pgflow.step_states AS ss ON ss.run_id = t.run_id AND ss.step_slug = t.step_slug
    WHERE t.run_id = retry_run.run_id AND t.status <> 'completed'
      AND ss.status IN ('started', 'failed');

    IF v_slugs IS NOT NULL THEN
        IF v_old IS NOT NULL THEN
            -- Archived when the run failed; a still live one (a 0.8.1 schema archives a failed
            -- run's messages too, so none should be) goes to the archive first.
            PERFORM pgflow_kombu.queue_archive(v_flow, v_old);
            v_archive := to_regclass(format('pgmq.%I', 'a_' || lower(v_flow)));
            IF v_archive IS NOT NULL THEN
                EXECUTE format('DELETE FROM %s WHERE msg_id = ANY ($1)', v_archive) USING v_old;
            END IF;
        END IF;
        v_new := pgflow_kombu.queue_send(v_flow, v_messages, v_delays);
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued', attempts_count = 0, error_message = NULL, output = NULL,
            queued_at = v_now, started_at = NULL, failed_at = NULL, completed_at = NULL,
            last_worker_id = NULL, message_id = n.message_id
        FROM unnest(v_slugs, v_indexes, v_new) AS n(step_slug, task_index, message_id)
        WHERE t.run_id = retry_run.run_id AND t.step_slug = n.step_slug
          AND t.task_index = n.task_index;
    END IF;

    UPDATE pgflow.step_states AS ss
    SET status = 'started', failed_at = NULL, error_message = NULL
    WHERE ss.run_id = retry_run.run_id AND ss.status = 'failed' AND ss.started_at IS NOT NULL;
    -- A step that failed without starting (an unmet condition) is judged again when started.
    UPDATE pgflow.step_states AS ss
    SET status = 'created', failed_at = NULL, error_message = NULL, remaining_tasks = NULL
    WHERE ss.run_id = retry_run.run_id AND ss.status = 'failed';
    v_unstarted := FOUND;
    UPDATE pgflow.runs AS r SET status = 'started', failed_at = NULL
    WHERE r.run_id = retry_run.run_id;
    DELETE FROM pgflow_kombu.cancelled_runs AS c WHERE c.run_id = retry_run.run_id;
    IF v_unstarted THEN
        PERFORM pgflow.start_ready_steps(retry_run.run_id);
    END IF;
    RETURN coalesce(cardinality(v_slugs), 0);
END;
$$;

-- The messages of some runs' tasks leave their flow's queue and archive tables (by msg_id, the
-- tables' primary keys).
CREATE OR REPLACE FUNCTION pgflow_kombu.delete_run_messages(run_ids uuid[])
RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    m record;
    v_table regclass;
BEGIN
    FOR m IN
        SELECT t.flow_slug, array_agg(t.message_id) AS ids
        FROM pgflow.step_tasks AS t
        WHERE t.run_id = ANY (delete_run_messages.run_ids) AND t.message_id IS NOT NULL
        GROUP BY t.flow_slug
    LOOP
        FOREACH v_table IN ARRAY ARRAY[to_regclass(format('pgmq.%I', 'q_' || lower(m.flow_slug))),
                                       to_regclass(format('pgmq.%I', 'a_' || lower(m.flow_slug)))]
        LOOP
            CONTINUE WHEN v_table IS NULL;
            EXECUTE format('DELETE FROM %s WHERE msg_id = ANY ($1)', v_table) USING m.ids;
        END LOOP;
    END LOOP;
END;
$$;

-- Our rows of some runs that do not go with the run row by themselves (no foreign key to it:
-- they are written beside pgflow's functions, see 0045_runs_api.sql and 0060_limits.sql). The
-- tables of later migrations are named when the function runs, not when it is created.
CREATE OR REPLACE FUNCTION pgflow_kombu.delete_run_rows(run_ids uuid[])
RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    DELETE FROM pgflow_kombu.run_controls AS c WHERE c.run_id = ANY (delete_run_rows.run_ids);
    DELETE FROM pgflow_kombu.watched_runs AS w WHERE w.run_id = ANY (delete_run_rows.run_ids);
END;
$$;

-- Delete one run, whatever its status: its tasks, step states, queue and archived messages and
-- our rows of it (they reference the run ON DELETE CASCADE). A worker still running one of its
-- tasks finds its report stale. Returns false when there is no such run.
CREATE OR REPLACE FUNCTION pgflow_kombu.delete_run(run_id uuid)
RETURNS boolean
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM 1 FROM pgflow.runs AS r WHERE r.run_id = delete_run.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgflow_kombu.delete_run_messages(ARRAY[delete_run.run_id]);
    PERFORM pgflow_kombu.delete_run_rows(ARRAY[delete_run.run_id]);
    DELETE FROM pgflow.step_tasks AS t WHERE t.run_id = delete_run.run_id;
    DELETE FROM pgflow.step_states AS ss WHERE ss.run_id = delete_run.run_id;
    DELETE FROM pgflow.runs AS r WHERE r.run_id = delete_run.run_id;
    RETURN true;
END;
$$;

-- One batch of pruning: up to batch_size runs that finished (completed, failed or cancelled)
-- more than older_than ago, deleted as delete_run does. Runs locked elsewhere are skipped (a
-- late report, a concurrent prune) and left for the next batch. Returns how many were deleted;
-- callers repeat until it returns less than batch_size, one short transaction per batch, so
-- workers never wait long on the locks it takes.
CREATE OR REPLACE FUNCTION pgflow_kombu.prune_runs(older_than interval, batch_size integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_ids uuid[];
BEGIN
    IF prune_runs.older_than IS NULL OR prune_runs.older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of 0 or more, got %',
            coalesce(prune_runs.older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF prune_runs.batch_size IS NULL OR prune_runs.batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be >= 1, got %',
            coalesce(prune_runs.batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(d.run_id) INTO v_ids
    FROM (
        SELECT r.run_id
        FROM pgflow.runs AS r
        WHERE r.status IN ('completed', 'failed')
          AND coalesce(r.completed_at, r.failed_at) < now() - prune_runs.older_than
        LIMIT prune_runs.batch_size
        FOR UPDATE SKIP LOCKED
    ) AS d;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pgflow_kombu.delete_run_messages(v_ids);
    PERFORM pgflow_kombu.delete_run_rows(v_ids);
    DELETE FROM pgflow.step_tasks AS t WHERE t.run_id = ANY (v_ids);
    DELETE FROM pgflow.step_states AS ss WHERE ss.run_id = ANY (v_ids);
    DELETE FROM pgflow.runs AS r WHERE r.run_id = ANY (v_ids);
    RETURN cardinality(v_ids);
END;
$$;

-- One batch of archive pruning: up to batch_size messages archived more than older_than ago,
-- taken from the flow archive tables (pgmq.a_<flow>) in flow order. Returns how many.
CREATE OR REPLACE FUNCTION pgflow_kombu.prune_archives(older_than interval, batch_size integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_table regclass;
    v_left integer := prune_archives.batch_size;
    v_count integer;
BEGIN
    IF prune_archives.older_than IS NULL OR prune_archives.older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be an interval of 0 or more, got %',
            coalesce(prune_archives.older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF prune_archives.batch_size IS NULL OR prune_archives.batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be >= 1, got %',
            coalesce(prune_archives.batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_table IN
        SELECT to_regclass(format('pgmq.%I', 'a_' || lower(f.flow_slug)))
        FROM pgflow.flows AS f
        ORDER BY f.flow_slug
    LOOP
        CONTINUE WHEN v_table IS NULL;
        EXECUTE format(
            'DELETE FROM %1$s WHERE msg_id IN (SELECT a.msg_id FROM %1$s AS a '
            'WHERE a.archived_at < now() - $1 LIMIT $2 FOR UPDATE SKIP LOCKED)', v_table)
        USING prune_archives.older_than, v_left;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_left := v_left - v_count;
        EXIT WHEN v_left <= 0;
    END LOOP;
    RETURN prune_archives.batch_size - v_left;
END;
$$;

-- pgflow.runs as our API reads them: status 'cancelled' for a run in cancelled_runs (pgflow's
-- row says failed), with when and why.
CREATE OR REPLACE VIEW pgflow_kombu.run_view AS
SELECT r.run_id, r.flow_slug,
       CASE WHEN c.run_id IS NULL THEN r.status ELSE 'cancelled' END AS status,
       r.input, r.output, r.remaining_steps, r.started_at, r.completed_at, r.failed_at,
       c.cancelled_at, c.reason AS cancel_reason
FROM pgflow.runs AS r
LEFT JOIN pgflow_kombu.cancelled_runs AS c ON c.run_id = r.run_id;
