-- Set-based hot paths, part 3 (see 0090_set_based.sql): pgflow_kombu.report_tasks, the worker's
-- batch report, takes the set-based functions of 0091 for what they can do and the per-row
-- functions for the rest, in the per-row order.

-- One report of a batch, as parsed by report_tasks; mode says how it is handled: 'set' (a
-- completion pgflow_kombu.complete_tasks_set does), 'retry' (a failure retry_tasks_set does),
-- 'stale', 'idle' (its run failed meanwhile: complete_task changes nothing) or 'row' (through
-- the per-row functions).
CREATE TYPE pgflow_kombu.task_report AS (
    ord integer, run_id uuid, step_slug text, task_index integer, attempt integer,
    worker_id uuid, is_failure boolean, output jsonb, error text, is_final boolean,
    mode text, detail text
);

-- One report through the per-row functions (pgflow.complete_task, fail_task, reject_task), in
-- an exception block of its own. The outcomes are report_tasks's; archive_flow and archive_id
-- name the message of a task this call completed when defer_archive left it to the caller.
CREATE OR REPLACE FUNCTION pgflow_kombu.report_one(
    r pgflow_kombu.task_report, defer_archive boolean
) RETURNS TABLE (
    outcome text, detail text, retrying boolean, run_status text, archive_flow text,
    archive_id bigint
)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    task_status text;
    task_attempts integer;
    task_worker uuid;
    run_before text;
    message text;
    done pgflow.step_tasks;
BEGIN
    BEGIN
        SELECT run.status INTO run_before
        FROM pgflow.runs AS run WHERE run.run_id = r.run_id FOR UPDATE;
        SELECT t.status, t.attempts_count, t.last_worker_id
        INTO task_status, task_attempts, task_worker
        FROM pgflow.step_tasks AS t
        WHERE t.run_id = r.run_id AND t.step_slug = r.step_slug AND t.task_index = r.task_index;
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
            -- pgflow 0.8.1's complete_task keeps the error of an earlier failed attempt; a task
            -- our worker completed carries none (as complete_task_core leaves it).
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
    -- Only a task this call completed (complete_task_core returns the task unchanged when its
    -- run had failed meanwhile: its message stays, as complete_task leaves it).
    IF outcome = 'completed' AND done.status = 'completed' AND done.message_id IS NOT NULL THEN
        archive_flow := done.flow_slug;
        archive_id := done.message_id;
    END IF;
    RETURN NEXT;
END;
$$;

-- Decides how report_tasks handles each report (their runs locked, the reports in order): the
-- mode and, for a stale one, the detail the per-row path would give it. A completion is 'set'
-- when complete_tasks_set can do it, a failure with attempts left 'retry' (retry_tasks_set); a
-- run keeps to one way: when one of its reports needs the per-row functions (a last attempt
-- failed, a flow with conditions, an output that leaves a dependent map without tasks or is
-- not the array it maps over, two reports of one task where one is a failure), all of them
-- take it.
CREATE OR REPLACE FUNCTION pgflow_kombu.plan_reports(reports pgflow_kombu.task_report[])
RETURNS pgflow_kombu.task_report[]
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN ARRAY(
        WITH judged AS (
            SELECT x.*, j.mode AS judged_mode, j.detail AS judged_detail
            FROM (
                SELECT y.*, row_number() OVER (
                           PARTITION BY y.run_id, y.step_slug, y.task_index, y.attempt,
                                        y.worker_id
                           ORDER BY y.n) AS repeat,
                       count(*) OVER (PARTITION BY y.run_id, y.step_slug, y.task_index)
                           AS reports_of_task
                FROM unnest(plan_reports.reports) WITH ORDINALITY
                     AS y(ord, run_id, step_slug, task_index, attempt, worker_id, is_failure,
                          output, error, is_final, mode, detail, n)
            ) AS x
            LEFT JOIN pgflow.runs AS run ON run.run_id = x.run_id
            LEFT JOIN pgflow.step_tasks AS t
              ON t.run_id = x.run_id AND t.step_slug = x.step_slug AND t.task_index = x.task_index
            LEFT JOIN pgflow.steps AS st
              ON st.flow_slug = t.flow_slug AND st.step_slug = t.step_slug
            LEFT JOIN pgflow.flows AS f ON f.flow_slug = t.flow_slug
            CROSS JOIN LATERAL (
                SELECT CASE
                    WHEN t.status IS DISTINCT FROM 'started' OR t.attempts_count <> x.attempt
                         OR t.last_worker_id IS DISTINCT FROM x.worker_id THEN 'stale'
                    -- A failure with attempts left, alone on its task, in a started run: back
                    -- to queued after the backoff (no event, no counter moves).
                    WHEN x.is_failure THEN CASE
                        WHEN NOT x.is_final AND x.reports_of_task = 1 AND run.status = 'started'
                             AND t.attempts_count < coalesce(st.opt_max_attempts,
                                                             f.opt_max_attempts)
                        THEN 'retry' ELSE 'row' END
                    WHEN run.status = 'failed' THEN 'idle'
                    -- The same attempt reported again: the first report completes it.
                    WHEN x.repeat > 1 THEN 'again'
                    WHEN run.status <> 'started' THEN 'row'
                    WHEN EXISTS (SELECT 1 FROM pgflow_kombu.step_conditions AS c
                                 WHERE c.flow_slug = run.flow_slug) THEN 'row'
                    WHEN CASE WHEN jsonb_typeof(x.output) = 'array'
                              THEN jsonb_array_length(x.output) = 0 ELSE true END
                         AND EXISTS (
                        SELECT 1
                        FROM pgflow.deps d
                        JOIN pgflow.steps p ON p.flow_slug = d.flow_slug
                                           AND p.step_slug = d.dep_slug
                        JOIN pgflow.steps c ON c.flow_slug = d.flow_slug
                                           AND c.step_slug = d.step_slug
                        JOIN pgflow.step_states cs ON cs.run_id = x.run_id
                                                  AND cs.step_slug = d.step_slug
                        WHERE d.flow_slug = run.flow_slug AND d.dep_slug = x.step_slug
                          AND p.step_type = 'single' AND c.step_type = 'map'
                          AND cs.initial_tasks IS NULL) THEN 'row'
                    ELSE 'set'
                END AS mode,
                coalesce(t.status, 'missing') || ' attempt '
                    || coalesce(t.attempts_count::text, '-') AS detail
            ) AS j
        ),
        by_run AS (
            SELECT g.*, bool_or(g.judged_mode = 'row') OVER (PARTITION BY g.run_id) AS per_row
            FROM judged g
        )
        SELECT ROW(b.ord, b.run_id, b.step_slug, b.task_index, b.attempt, b.worker_id,
                   b.is_failure, b.output, b.error, b.is_final,
                   CASE WHEN b.per_row THEN 'row'
                        WHEN b.judged_mode = 'again' THEN 'stale'
                        ELSE b.judged_mode END,
                   CASE WHEN b.judged_mode = 'again' THEN 'completed attempt ' || b.attempt
                        WHEN b.judged_mode = 'stale' THEN b.judged_detail END
               )::pgflow_kombu.task_report
        FROM by_run b
        ORDER BY b.n
    );
END;
$$;

-- Report a batch of finished attempts in one transaction (the contract is 0030_worker.sql's:
-- same reports, same result rows). Reports are handled in (run_id, step_slug, task_index) order,
-- each run locked first (all of them up front, in that order), so concurrent batches take locks
-- in one order. Runs whose reports the set can do (completions: complete_tasks_set; failures
-- with attempts left: retry_tasks_set; see plan_reports) go through them, a stretch of
-- consecutive such runs at a time; the others, between them, report by report through the
-- per-row functions, so messages and events follow the per-row order. Should the set fail (a bad output), its stretch goes report by report.
CREATE OR REPLACE FUNCTION pgflow_kombu.report_tasks(
    reports jsonb
) RETURNS TABLE (
    ordinal integer, outcome text, detail text, retrying boolean, run_status text
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    -- On our schema, completions leave their messages to be archived at the end, one statement
    -- per queue; on an upstream-installed schema complete_task archives each one itself.
    defer_archive boolean := to_regprocedure(
        'pgflow_kombu.complete_task_core(uuid,text,integer,jsonb,boolean)') IS NOT NULL;
    v_reports pgflow_kombu.task_report[];
    v_stretch record;
    r pgflow_kombu.task_report;
    one record;
    v_set boolean;
    v_runs uuid[];
    v_slugs text[];
    v_indexes integer[];
    v_outputs jsonb[];
    v_errors text[];
    archive_flows text[] := '{}';
    archive_ids bigint[] := '{}';
    queue record;
BEGIN
    SELECT coalesce(array_agg(ROW(
               e.ord::integer, (e.value ->> 'run_id')::uuid, e.value ->> 'step_slug',
               (e.value ->> 'task_index')::integer, (e.value ->> 'attempt')::integer,
               (e.value ->> 'worker_id')::uuid, e.value ? 'error', e.value -> 'output',
               e.value ->> 'error', coalesce((e.value ->> 'final')::boolean, false),
               'row', NULL)::pgflow_kombu.task_report
           ORDER BY (e.value ->> 'run_id')::uuid, e.value ->> 'step_slug',
                    (e.value ->> 'task_index')::integer, e.ord), '{}')
    INTO v_reports
    FROM jsonb_array_elements(reports) WITH ORDINALITY AS e(value, ord);

    v_set := defer_archive;
    IF v_set THEN
        BEGIN
            PERFORM 1 FROM pgflow.runs AS run
            WHERE run.run_id = ANY (ARRAY(SELECT x.run_id FROM unnest(v_reports) AS x))
            ORDER BY run.run_id
            FOR UPDATE;
        EXCEPTION WHEN deadlock_detected OR lock_not_available OR query_canceled THEN
            v_set := false;  -- report by report: each gets its own 'retry'
        END;
    END IF;
    IF v_set THEN
        v_reports := pgflow_kombu.plan_reports(v_reports);
    END IF;

    FOR v_stretch IN
        SELECT min(x.n) AS first, max(x.n) AS last, bool_and(x.mode <> 'row') AS by_set
        FROM (
            SELECT y.n, y.mode,
                   y.n - row_number() OVER (PARTITION BY y.mode = 'row' ORDER BY y.n) AS island
            FROM unnest(v_reports) WITH ORDINALITY AS y(ord, run_id, step_slug, task_index,
                                                        attempt, worker_id, is_failure, output,
                                                        error, is_final, mode, detail, n)
        ) AS x
        GROUP BY x.mode = 'row', x.island
        ORDER BY 1
    LOOP
        IF v_stretch.by_set THEN
            BEGIN
                SELECT array_agg(x.run_id ORDER BY x.n), array_agg(x.step_slug ORDER BY x.n),
                       array_agg(x.task_index ORDER BY x.n), array_agg(x.output ORDER BY x.n)
                INTO v_runs, v_slugs, v_indexes, v_outputs
                FROM unnest(v_reports[v_stretch.first:v_stretch.last]) WITH ORDINALITY
                     AS x(ord, run_id, step_slug, task_index, attempt, worker_id, is_failure,
                          output, error, is_final, mode, detail, n)
                WHERE x.mode = 'set';
                IF v_runs IS NOT NULL THEN
                    PERFORM pgflow_kombu.complete_tasks_set(v_runs, v_slugs, v_indexes,
                                                            v_outputs);
                END IF;
                SELECT array_agg(x.run_id ORDER BY x.n), array_agg(x.step_slug ORDER BY x.n),
                       array_agg(x.task_index ORDER BY x.n), array_agg(x.error ORDER BY x.n)
                INTO v_runs, v_slugs, v_indexes, v_errors
                FROM unnest(v_reports[v_stretch.first:v_stretch.last]) WITH ORDINALITY
                     AS x(ord, run_id, step_slug, task_index, attempt, worker_id, is_failure,
                          output, error, is_final, mode, detail, n)
                WHERE x.mode = 'retry';
                IF v_runs IS NOT NULL THEN
                    PERFORM pgflow_kombu.retry_tasks_set(v_runs, v_slugs, v_indexes, v_errors);
                END IF;
                RETURN QUERY
                SELECT x.ord,
                       CASE x.mode WHEN 'stale' THEN 'stale' WHEN 'retry' THEN 'failed'
                                   ELSE 'completed' END,
                       x.detail, CASE WHEN x.mode = 'retry' THEN true END,
                       -- The run's last completion finished it.
                       CASE WHEN x.mode = 'set' AND run.status = 'completed'
                                 AND x.n = max(x.n) FILTER (WHERE x.mode = 'set')
                                               OVER (PARTITION BY x.run_id)
                            THEN 'completed' END
                FROM unnest(v_reports[v_stretch.first:v_stretch.last]) WITH ORDINALITY
                     AS x(ord, run_id, step_slug, task_index, attempt, worker_id, is_failure,
                          output, error, is_final, mode, detail, n)
                LEFT JOIN pgflow.runs AS run ON run.run_id = x.run_id;
                CONTINUE;
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- nothing of the set stays: report by report below
            END;
        END IF;
        FOR r IN SELECT * FROM unnest(v_reports[v_stretch.first:v_stretch.last]) LOOP
            SELECT * INTO one FROM pgflow_kombu.report_one(r, defer_archive);
            ordinal := r.ord;
            outcome := one.outcome;
            detail := one.detail;
            retrying := one.retrying;
            run_status := one.run_status;
            IF one.archive_id IS NOT NULL THEN
                archive_flows := archive_flows || one.archive_flow;
                archive_ids := archive_ids || one.archive_id;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    FOR queue IN
        SELECT x.flow, array_agg(x.id ORDER BY x.id) AS ids
        FROM unnest(archive_flows, archive_ids) AS x(flow, id)
        GROUP BY x.flow
    LOOP
        PERFORM pgflow_kombu.queue_archive(queue.flow, queue.ids);
    END LOOP;
END;
$$;
