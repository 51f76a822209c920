-- Set-based hot paths, part 2 (see 0090_set_based.sql): a batch of tasks completed, with the
-- cascade to their dependents and runs, and a batch of failures retried, a few statements each.

-- A step a batch completed, for the statements that follow.
CREATE TYPE pgflow_kombu.completed_step AS (
    flow_slug text, run_id uuid, step_slug text, step_type text, pos bigint,
    child_tasks integer, output jsonb, completed_at timestamptz
);

-- Completes a batch of started tasks, as pgflow.complete_task called for each in array order
-- would (the caller orders them by run_id, step_slug, task_index): the tasks, their steps'
-- counters (a step completes with its last task), the dependents' counters and task counts, the
-- dependents that became ready started (pgflow_kombu.start_ready_steps_set), the runs' remaining
-- steps (a run completes, with its output, with its last step), the events in per-row order
-- and the tasks' messages archived. The caller holds the runs' locks and has checked what the
-- set cannot do: every run is started, of a flow without conditions, each task is 'started'
-- and listed once, and no completion leaves a dependent map without tasks or with a non-array
-- to map over (those go through pgflow.complete_task). Returns the number of tasks completed.
CREATE OR REPLACE FUNCTION pgflow_kombu.complete_tasks_set(
    run_ids uuid[], step_slugs text[], task_indexes integer[], outputs jsonb[]
) RETURNS integer
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_count integer;
    v_archive_flows text[];
    v_archive_ids bigint[];
    v_done pgflow_kombu.completed_step[];
    v_ready_runs uuid[];
    v_ready_slugs text[];
    v_ready_pos bigint[];
    v_runs_done jsonb[];
    v_started pgflow_kombu.started_step[];
    v_events pgflow_kombu.pending_event[];
    v_flow text;
BEGIN
    -- The tasks, and their steps' remaining tasks.
    WITH input AS (
        SELECT x.run_id, x.step_slug, x.task_index, x.output, x.pos
        FROM unnest(complete_tasks_set.run_ids, complete_tasks_set.step_slugs,
                    complete_tasks_set.task_indexes, complete_tasks_set.outputs)
             WITH ORDINALITY AS x(run_id, step_slug, task_index, output, pos)
    ),
    -- Each task found by primary key (a LATERAL probe per task), then updated by tuple id: a
    -- join on the key could be planned as a scan of every started task.
    targets AS MATERIALIZED (
        SELECT q.tid, i.pos, i.output
        FROM input i
        CROSS JOIN LATERAL (
            SELECT t.ctid AS tid
            FROM pgflow.step_tasks t
            WHERE t.run_id = i.run_id AND t.step_slug = i.step_slug
              AND t.task_index = i.task_index AND t.status = 'started'
            LIMIT 1
        ) q
    ),
    tasks AS (
        UPDATE pgflow.step_tasks t
        SET status = 'completed', completed_at = now(), output = k.output, error_message = NULL
        FROM targets k
        WHERE t.ctid = ANY (ARRAY(SELECT x.tid FROM targets x)) AND t.ctid = k.tid
        RETURNING t.flow_slug, t.run_id, t.step_slug, t.message_id, k.pos, k.output
    ),
    per_step AS (
        SELECT k.run_id, k.step_slug, count(*)::integer AS n, max(k.pos) AS pos,
               (array_agg(k.output ORDER BY k.pos DESC))[1] AS output
        FROM tasks k
        GROUP BY k.run_id, k.step_slug
    ),
    steps AS (
        UPDATE pgflow.step_states ss
        SET remaining_tasks = ss.remaining_tasks - k.n,
            status = CASE WHEN ss.remaining_tasks = k.n THEN 'completed' ELSE 'started' END,
            completed_at = CASE WHEN ss.remaining_tasks = k.n THEN now() END
        FROM per_step k, pgflow.steps s
        WHERE ss.run_id = k.run_id AND ss.step_slug = k.step_slug
          AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
        RETURNING ss.flow_slug, ss.run_id, ss.step_slug, s.step_type, k.pos,
                  CASE WHEN s.step_type = 'map' THEN ss.initial_tasks
                       WHEN jsonb_typeof(k.output) = 'array' THEN jsonb_array_length(k.output)
                  END AS child_tasks,
                  k.output, ss.status, ss.completed_at
    )
    SELECT (SELECT count(*) FROM tasks),
           (SELECT array_agg(k.flow_slug ORDER BY k.message_id) FROM tasks k
            WHERE k.message_id IS NOT NULL),
           (SELECT array_agg(k.message_id ORDER BY k.message_id) FROM tasks k
            WHERE k.message_id IS NOT NULL),
           (SELECT coalesce(array_agg(ROW(d.flow_slug, d.run_id, d.step_slug, d.step_type, d.pos,
                                          d.child_tasks, d.output, d.completed_at
                                      )::pgflow_kombu.completed_step ORDER BY d.pos), '{}')
            FROM steps d WHERE d.status = 'completed')
    INTO v_count, v_archive_flows, v_archive_ids, v_done;

    IF cardinality(v_done) > 0 THEN
        -- Each dependent loses one pending dependency per completed parent and learns its task
        -- count; each run loses its completed steps, and completes with its last one.
        WITH done AS (
            SELECT d.* FROM unnest(v_done) AS d
        ),
        counted AS (
            SELECT x.run_id, d.step_slug, count(*)::integer AS n, max(x.pos) AS pos,
                   max(x.child_tasks) AS child_tasks
            FROM done x
            JOIN pgflow.deps d ON d.flow_slug = x.flow_slug AND d.dep_slug = x.step_slug
            GROUP BY x.run_id, d.step_slug
        ),
        dependents AS (
            UPDATE pgflow.step_states cs
            SET remaining_deps = cs.remaining_deps - k.n,
                initial_tasks = coalesce(cs.initial_tasks, k.child_tasks)
            FROM counted k
            WHERE cs.run_id = k.run_id AND cs.step_slug = k.step_slug
            RETURNING cs.run_id, cs.step_slug, k.pos, cs.remaining_deps, cs.initial_tasks
        ),
        finished AS (
            SELECT x.run_id, count(*)::integer AS n, max(x.pos) AS pos
            FROM done x GROUP BY x.run_id
        ),
        -- The output of each run this batch finishes, as pgflow_kombu.run_output gives it (no
        -- step of these runs was skipped: flows with conditions never come here).
        closing AS (
            SELECT k.run_id, (
                SELECT jsonb_object_agg(
                    ss.step_slug,
                    CASE WHEN s.step_type = 'map' THEN (
                        SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
                        FROM pgflow.step_tasks t
                        WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
                          AND t.status = 'completed'
                    ) ELSE (
                        SELECT t.output
                        FROM pgflow.step_tasks t
                        WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
                          AND t.status = 'completed'
                        LIMIT 1
                    ) END)
                FROM pgflow.step_states ss
                JOIN pgflow.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
                WHERE ss.run_id = k.run_id AND ss.status = 'completed'
                  AND NOT EXISTS (
                      SELECT 1 FROM pgflow.deps d
                      WHERE d.flow_slug = ss.flow_slug AND d.dep_slug = ss.step_slug)
            ) AS output
            FROM finished k
            JOIN pgflow.runs r ON r.run_id = k.run_id
            WHERE r.remaining_steps = k.n
        ),
        runs AS (
            UPDATE pgflow.runs r
            SET remaining_steps = r.remaining_steps - k.n,
                status = CASE WHEN r.remaining_steps = k.n THEN 'completed' ELSE r.status END,
                completed_at = CASE WHEN r.remaining_steps = k.n THEN now() END,
                output = CASE WHEN r.remaining_steps = k.n THEN c.output END
            FROM finished k
            LEFT JOIN closing c ON c.run_id = k.run_id
            WHERE r.run_id = k.run_id
            RETURNING r.run_id, r.flow_slug, r.status, r.output, r.completed_at, k.pos
        )
        SELECT (SELECT array_agg(k.run_id ORDER BY k.pos, k.step_slug) FROM dependents k
                WHERE k.remaining_deps = 0 AND k.initial_tasks > 0),
               (SELECT array_agg(k.step_slug ORDER BY k.pos, k.step_slug) FROM dependents k
                WHERE k.remaining_deps = 0 AND k.initial_tasks > 0),
               (SELECT array_agg(k.pos ORDER BY k.pos, k.step_slug) FROM dependents k
                WHERE k.remaining_deps = 0 AND k.initial_tasks > 0),
               (SELECT array_agg(jsonb_build_object(
                           'pos', k.pos, 'run_id', k.run_id, 'flow_slug', k.flow_slug,
                           'output', k.output, 'completed_at', k.completed_at))
                FROM runs k WHERE k.status = 'completed')
        INTO v_ready_runs, v_ready_slugs, v_ready_pos, v_runs_done;
    END IF;

    IF v_ready_runs IS NOT NULL THEN
        v_started := pgflow_kombu.start_ready_steps_set(v_ready_runs, v_ready_slugs, v_ready_pos);
    END IF;

    IF v_rt AND cardinality(v_done) > 0 THEN
        -- step:completed (a map's output: its tasks' outputs), the dependents it started, and
        -- run:completed, at the position of the task that did it.
        v_events := ARRAY(
            SELECT ROW(d.pos, 0, d.step_slug, 'step:' || d.step_slug || ':completed',
                       'pgflow:run:' || d.run_id,
                       jsonb_build_object(
                           'event_type', 'step:completed',
                           'run_id', d.run_id,
                           'step_slug', d.step_slug,
                           'status', 'completed',
                           'output', CASE WHEN d.step_type = 'map' THEN (
                               SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index),
                                               '[]'::jsonb)
                               FROM pgflow.step_tasks t
                               WHERE t.run_id = d.run_id AND t.step_slug = d.step_slug
                                 AND t.status = 'completed') ELSE d.output END,
                           'completed_at', d.completed_at))::pgflow_kombu.pending_event
            FROM unnest(v_done) AS d)
            || pgflow_kombu.started_events(coalesce(v_started, '{}'))
            || ARRAY(
            SELECT ROW((r ->> 'pos')::bigint, 2, '', 'run:completed',
                       'pgflow:run:' || (r ->> 'run_id'),
                       jsonb_build_object(
                           'event_type', 'run:completed',
                           'run_id', r -> 'run_id',
                           'flow_slug', r -> 'flow_slug',
                           'status', 'completed',
                           'output', r -> 'output',
                           'completed_at', r -> 'completed_at'))::pgflow_kombu.pending_event
            FROM unnest(coalesce(v_runs_done, '{}')) AS r);
        PERFORM pgflow_kombu.send_events(v_events);
    END IF;

    IF v_archive_ids IS NOT NULL THEN
        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_archive_flows) AS f ORDER BY 1 LOOP
            PERFORM pgflow_kombu.queue_archive(v_flow, ARRAY(
                SELECT x.id FROM unnest(v_archive_flows, v_archive_ids) AS x(flow, id)
                WHERE x.flow = v_flow ORDER BY x.id));
        END LOOP;
    END IF;
    RETURN v_count;
END;
$$;

-- Fails a batch of started tasks that have attempts left, as pgflow.fail_task does for each:
-- the task goes back to queued with the error, and its message becomes visible again after the
-- backoff (base_delay * 2^attempts). The caller holds the runs' locks and has checked that each
-- run is started, each task 'started' with attempts left and listed once.
CREATE OR REPLACE FUNCTION pgflow_kombu.retry_tasks_set(
    run_ids uuid[], step_slugs text[], task_indexes integer[], errors text[]
) RETURNS void
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        WITH input AS (
            SELECT x.* FROM unnest(retry_tasks_set.run_ids, retry_tasks_set.step_slugs,
                                   retry_tasks_set.task_indexes, retry_tasks_set.errors)
                AS x(run_id, step_slug, task_index, error)
        ),
        targets AS MATERIALIZED (
            SELECT q.tid, i.error
            FROM input i
            CROSS JOIN LATERAL (
                SELECT t.ctid AS tid
                FROM pgflow.step_tasks t
                WHERE t.run_id = i.run_id AND t.step_slug = i.step_slug
                  AND t.task_index = i.task_index AND t.status = 'started'
                LIMIT 1
            ) q
        ),
        retried AS (
            UPDATE pgflow.step_tasks t
            SET status = 'queued', failed_at = NULL, started_at = NULL, error_message = k.error
            FROM targets k
            WHERE t.ctid = ANY (ARRAY(SELECT x.tid FROM targets x)) AND t.ctid = k.tid
            RETURNING t.flow_slug, t.step_slug, t.message_id, t.attempts_count
        )
        SELECT r.flow_slug, array_agg(r.message_id ORDER BY r.message_id) AS ids,
               array_agg(pgflow.calculate_retry_delay(coalesce(s.opt_base_delay, f.opt_base_delay),
                                                      r.attempts_count)
                         ORDER BY r.message_id) AS delays
        FROM retried r
        JOIN pgflow.steps s ON s.flow_slug = r.flow_slug AND s.step_slug = r.step_slug
        JOIN pgflow.flows f ON f.flow_slug = r.flow_slug
        WHERE r.message_id IS NOT NULL
        GROUP BY r.flow_slug
        ORDER BY r.flow_slug
    LOOP
        PERFORM pgflow_kombu.queue_set_vt(v_queue.flow_slug, v_queue.ids, v_queue.delays);
    END LOOP;
END;
$$;
