-- Worker helpers of pgflow-kombu (schema pgflow_kombu): batch claims, grouped reports, releases.
-- They call only the pgflow 0.8.1 contract, so they also work on an upstream-installed schema.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- Claim the queued tasks behind a batch of messages of one flow queue, in one round trip:
-- pgflow.start_tasks, then the visibility of the claimed messages extended to (step or flow
-- timeout) + 2 s, which 0.8.1's start_tasks computes but never applies. The worker reads messages
-- hidden for read_visibility seconds (about its stalled-after: a message read and never claimed
-- is back that soon), so only the messages of steps whose timeout outlasts that are updated.
-- Returns what the worker needs to run and report each task: its input, the attempt it starts
-- (attempts_count after the claim) and its timeout in seconds. Messages whose task is not queued
-- (another worker holds it, the run failed) are left alone. A flow with limits or priorities
-- (0060_limits.sql) first has its messages weighed by pgflow_kombu.admit_tasks: those over a
-- limit are deferred (visible again shortly, their task still queued, no attempt counted) and
-- not claimed.
CREATE OR REPLACE FUNCTION pgflow_kombu.claim_tasks(
    flow_slug text,
    msg_ids bigint[],
    worker_id uuid,
    read_visibility integer DEFAULT 0
) RETURNS TABLE (
    run_id uuid,
    step_slug text,
    task_index integer,
    msg_id bigint,
    input jsonb,
    attempt integer,
    timeout integer
)
LANGUAGE plpgsql
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    claimed pgflow.step_task_record[];
    extend_ids bigint[];
    extend_by integer[];
    admitted bigint[] := msg_ids;
BEGIN
    IF EXISTS (SELECT 1 FROM pgflow_kombu.flow_limits AS l
               WHERE l.flow_slug = claim_tasks.flow_slug) THEN
        admitted := pgflow_kombu.admit_tasks(claim_tasks.flow_slug, claim_tasks.msg_ids);
        IF cardinality(admitted) = 0 THEN
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(array_agg(s), '{}')
    INTO claimed
    FROM pgflow.start_tasks(flow_slug => claim_tasks.flow_slug,
                            msg_ids => admitted,
                            worker_id => claim_tasks.worker_id) AS s;
    IF cardinality(claimed) = 0 THEN
        RETURN;
    END IF;

    -- The attempt is read by primary key, one task at a time (a join could be planned as a scan
    -- of step_tasks while it has no statistics).
    RETURN QUERY
    SELECT c.run_id, c.step_slug, c.task_index, c.msg_id, c.input,
           (SELECT t.attempts_count
            FROM pgflow.step_tasks AS t
            WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug
              AND t.task_index = c.task_index),
           coalesce(st.opt_timeout, f.opt_timeout)
    FROM unnest(claimed) AS c
    JOIN pgflow.steps AS st ON st.flow_slug = c.flow_slug AND st.step_slug = c.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = c.flow_slug
    ORDER BY array_position(admitted, c.msg_id), c.msg_id;  -- higher priorities first

    SELECT array_agg(c.msg_id ORDER BY c.msg_id),
           array_agg(coalesce(st.opt_timeout, f.opt_timeout) + 2 ORDER BY c.msg_id)
    INTO extend_ids, extend_by
    FROM unnest(claimed) AS c
    JOIN pgflow.steps AS st ON st.flow_slug = c.flow_slug AND st.step_slug = c.step_slug
    JOIN pgflow.flows AS f ON f.flow_slug = c.flow_slug
    WHERE coalesce(st.opt_timeout, f.opt_timeout) + 2 > claim_tasks.read_visibility;
    IF extend_ids IS NOT NULL THEN
        PERFORM pgflow_kombu.queue_set_vt(claim_tasks.flow_slug, extend_ids, extend_by);
    END IF;
END;
$$;

-- Report a batch of finished attempts in one transaction. reports is a JSON array of
--   {"run_id", "step_slug", "task_index", "attempt", "worker_id", "output"}   (a completion) or
--   {"run_id", "step_slug", "task_index", "attempt", "worker_id", "error"}    (a failure),
--   with "final": true a failure that is not retried (pgflow_kombu.reject_task, 0060_limits.sql).
-- Each report runs in its own exception block, so one bad row does not undo the others, and
-- only applies to the attempt the worker holds: the task must still be 'started' with that
-- attempts_count and last_worker_id. Anything else (recovery requeued it, a timeout already
-- failed it, the run failed) is 'stale' and changes nothing, so an attempt is never completed
-- twice, nor completed after it failed. Rows are handled in (run_id, step_slug, task_index)
-- order, each run locked first as complete_task/fail_task do, so that concurrent batches take
-- locks in one order. Returns one row per report (ordinal = 1-based position in the array):
--   'completed' | 'failed' | 'stale' | 'retry' (a transient conflict: report it again) |
--   'rejected' (complete_task raised; the attempt was failed with that error instead).
-- For an applied report ('completed', 'failed', 'rejected') it also says what followed, for the
-- worker's hooks: retrying (the failed task went back to 'queued' for another attempt) and
-- run_status (the run's new status when this report changed it: it finished the run).
CREATE OR REPLACE FUNCTION pgflow_kombu.report_tasks(
    reports jsonb
) RETURNS TABLE (
    ordinal integer, outcome text, detail text, retrying boolean, run_status text
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    r record;
    task_status text;
    task_attempts integer;
    task_worker uuid;
    run_before text;
    message text;
    -- On our schema, completions leave their messages to be archived at the end, one statement
    -- per queue; on an upstream-installed schema complete_task archives each one itself.
    defer_archive boolean := to_regprocedure(
        'pgflow_kombu.complete_task_core(uuid,text,integer,jsonb,boolean)') IS NOT NULL;
    done pgflow.step_tasks;
    to_archive pgflow.step_tasks[] := '{}';
    queue record;
BEGIN
    FOR r IN
        SELECT e.ord::integer AS ord,
               (e.value ->> 'run_id')::uuid AS run_id,
               e.value ->> 'step_slug' AS step_slug,
               (e.value ->> 'task_index')::integer AS task_index,
               (e.value ->> 'attempt')::integer AS attempt,
               (e.value ->> 'worker_id')::uuid AS worker_id,
               e.value ? 'error' AS is_failure,
               e.value -> 'output' AS output,
               e.value ->> 'error' AS error,
               coalesce((e.value ->> 'final')::boolean, false) AS is_final
        FROM jsonb_array_elements(reports) WITH ORDINALITY AS e(value, ord)
        ORDER BY 2, 3, 4
    LOOP
        ordinal := r.ord;
        detail := NULL;
        retrying := NULL;
        run_status := NULL;
        BEGIN
            SELECT run.status INTO run_before
            FROM pgflow.runs AS run WHERE run.run_id = r.run_id FOR UPDATE;
            SELECT t.status, t.attempts_count, t.last_worker_id
            INTO task_status, task_attempts, task_worker
            FROM pgflow.step_tasks AS t
            WHERE t.run_id = r.run_id AND t.step_slug = r.step_slug
              AND t.task_index = r.task_index;
            IF NOT FOUND OR task_status <> 'started' OR task_attempts <> r.attempt
               OR task_worker IS DISTINCT FROM r.worker_id THEN
                outcome := 'stale';
                detail := coalesce(task_status, 'missing') || ' attempt '
                          || coalesce(task_attempts::text, '-');
            ELSIF r.is_failure AND r.is_final THEN
                PERFORM pgflow_kombu.reject_task(r.run_id, r.step_slug, r.task_index, r.error);
                outcome := 'failed';
            ELSIF r.is_failure THEN
                PERFORM pgflow.fail_task(run_id => r.run_id, step_slug => r.step_slug,
                                         task_index => r.task_index, error_message => r.error);
                outcome := 'failed';
            ELSIF defer_archive THEN
                SELECT * INTO done
                FROM pgflow_kombu.complete_task_core(r.run_id, r.step_slug, r.task_index,
                                                     r.output, false);
                outcome := 'completed';
            ELSE
                PERFORM pgflow.complete_task(run_id => r.run_id, step_slug => r.step_slug,
                                             task_index => r.task_index, output => r.output);
                -- pgflow 0.8.1's complete_task keeps the error of an earlier failed attempt;
                -- a task our worker completed carries none (as complete_task_core leaves it).
                UPDATE pgflow.step_tasks AS t SET error_message = NULL
                WHERE t.run_id = r.run_id AND t.step_slug = r.step_slug
                  AND t.task_index = r.task_index AND t.status = 'completed'
                  AND t.error_message IS NOT NULL;
                outcome := 'completed';
            END IF;
        EXCEPTION
            WHEN deadlock_detected OR serialization_failure OR lock_not_available
                 OR query_canceled THEN
                outcome := 'retry';
                detail := SQLERRM;
            WHEN OTHERS THEN
                message := SQLERRM;
                outcome := 'rejected';
                detail := message;
                IF NOT r.is_failure THEN
                    -- The output could not be stored: fail the attempt with the reason instead.
                    BEGIN
                        PERFORM pgflow.fail_task(
                            run_id => r.run_id, step_slug => r.step_slug,
                            task_index => r.task_index,
                            error_message => 'complete_task failed: ' || message);
                    EXCEPTION WHEN OTHERS THEN
                        outcome := 'retry';
                        detail := SQLERRM;
                    END;
                END IF;
        END;
        IF outcome IN ('completed', 'failed', 'rejected') THEN
            SELECT run.status INTO run_status FROM pgflow.runs AS run WHERE run.run_id = r.run_id;
            IF run_status IS NOT DISTINCT FROM run_before THEN
                run_status := NULL;
            END IF;
            IF outcome <> 'completed' THEN
                SELECT t.status = 'queued' INTO retrying
                FROM pgflow.step_tasks AS t
                WHERE t.run_id = r.run_id AND t.step_slug = r.step_slug
                  AND t.task_index = r.task_index;
            END IF;
        END IF;
        -- Only a task this call completed (complete_task_core returns the task unchanged when
        -- its run had failed meanwhile: its message stays, as complete_task leaves it).
        IF outcome = 'completed' AND done.status = 'completed' AND done.message_id IS NOT NULL THEN
            to_archive := to_archive || done;
        END IF;
        done := NULL;
        RETURN NEXT;
    END LOOP;
    FOR queue IN
        SELECT t.flow_slug, array_agg(t.message_id ORDER BY t.message_id) AS ids
        FROM unnest(to_archive) AS t
        GROUP BY t.flow_slug
    LOOP
        PERFORM pgflow_kombu.queue_archive(queue.flow_slug, queue.ids);
    END LOOP;
END;
$$;

-- Hand back tasks a worker claimed but never started (it is shutting down): each goes back to
-- 'queued' as if the claim had not happened (the attempt is not counted) and its message becomes
-- visible at once. Only tasks still 'started' by this worker with that attempt are touched.
-- tasks is a JSON array of {"run_id", "step_slug", "task_index", "attempt", "worker_id"}; returns how many
-- were released.
CREATE OR REPLACE FUNCTION pgflow_kombu.release_tasks(
    tasks jsonb
) RETURNS integer
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    released integer := 0;
    r record;
    queue text;
    message bigint;
BEGIN
    FOR r IN
        SELECT (e.value ->> 'run_id')::uuid AS run_id,
               e.value ->> 'step_slug' AS step_slug,
               (e.value ->> 'task_index')::integer AS task_index,
               (e.value ->> 'attempt')::integer AS attempt,
               (e.value ->> 'worker_id')::uuid AS worker_id
        FROM jsonb_array_elements(tasks) AS e(value)
        ORDER BY 1, 2, 3
    LOOP
        PERFORM 1 FROM pgflow.runs AS run WHERE run.run_id = r.run_id FOR UPDATE;
        UPDATE pgflow.step_tasks AS t
        SET status = 'queued',
            attempts_count = t.attempts_count - 1,
            started_at = NULL
        WHERE t.run_id = r.run_id AND t.step_slug = r.step_slug
          AND t.task_index = r.task_index AND t.status = 'started'
          AND t.attempts_count = r.attempt
          AND t.last_worker_id = r.worker_id
        RETURNING t.flow_slug, t.message_id INTO queue, message;
        IF FOUND THEN
            released := released + 1;
            IF message IS NOT NULL THEN
                PERFORM pgmq.set_vt(queue, message, 0);
            END IF;
        END IF;
    END LOOP;
    RETURN released;
END;
$$;
