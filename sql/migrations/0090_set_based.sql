-- Set-based hot paths of pgflow-kombu (schema pgflow_kombu): many runs started, and a batch of
-- tasks completed, in a few statements each instead of one pgflow function call per row.
--
-- They do what the per-row functions of our pgflow schema (0001) do, row for row: the same
-- runs, step states, tasks, counters, messages (in the same msg_id order) and realtime events
-- (in the same order) as pgflow.start_flow called once per run, or pgflow.complete_task called
-- once per task in (run_id, step_slug, task_index) order, in one transaction
-- (tests/integration/test_differential_set_based.py compares them with pgflow 0.8.1's own).
-- What a set cannot do the same way goes through those per-row functions, still in that order:
-- flows with conditions (0070), maps that get no task (the taskless cascade), outputs that break
-- a dependent map's type check, runs with failures in the batch. On a pgflow schema installed by
-- upstream (no pgflow_kombu.complete_task_core) everything goes per row, through its functions.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- A step that has just started (status started, remaining_tasks its task count), with what
-- sending its tasks needs: the delay of their messages and the position of what started it.
CREATE TYPE pgflow_kombu.started_step AS (
    flow_slug text, run_id uuid, step_slug text, pos bigint, started_at timestamptz,
    remaining_tasks integer, delay integer
);

-- A realtime event waiting to be sent: sent in (pos, phase, step_slug) order, the order the
-- per-row functions send them in.
CREATE TYPE pgflow_kombu.pending_event AS (
    pos bigint, phase integer, step_slug text, event text, topic text, payload jsonb
);

-- Sends events through Supabase's realtime.send (when it exists), in their order.
CREATE OR REPLACE FUNCTION pgflow_kombu.send_events(events pgflow_kombu.pending_event[])
RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_event pgflow_kombu.pending_event;
BEGIN
    IF cardinality(events) = 0 OR to_regnamespace('realtime') IS NULL
       OR to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NULL THEN
        RETURN;
    END IF;
    FOR v_event IN
        SELECT e.* FROM unnest(events) AS e ORDER BY e.pos, e.phase, e.step_slug
    LOOP
        PERFORM realtime.send(v_event.payload, v_event.event, v_event.topic, false);
    END LOOP;
END;
$$;

-- The tasks of steps that have just started, for many runs of any flows: one pgmq message per
-- task (visible after the step's delay) sent in (pos, step_slug, task_index) order, the order
-- per-row starts send them in, one queue_send per flow queue; then the step_tasks rows. The one
-- place a set of started steps gets its tasks: runs starting (pgflow_kombu.start_flows) and
-- ready steps starting (pgflow_kombu.start_ready_steps_set).
CREATE OR REPLACE FUNCTION pgflow_kombu.queue_started_steps(steps pgflow_kombu.started_step[])
RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_flows text[];
    v_runs uuid[];
    v_slugs text[];
    v_indexes integer[];
    v_messages jsonb[];
    v_delays integer[];
    v_flow text;
    v_msg_ids bigint[];
BEGIN
    SELECT array_agg(k.flow_slug ORDER BY k.pos, k.step_slug, i),
           array_agg(k.run_id ORDER BY k.pos, k.step_slug, i),
           array_agg(k.step_slug ORDER BY k.pos, k.step_slug, i),
           array_agg(i ORDER BY k.pos, k.step_slug, i),
           array_agg(jsonb_build_object('flow_slug', k.flow_slug, 'run_id', k.run_id,
                                        'step_slug', k.step_slug, 'task_index', i)
                     ORDER BY k.pos, k.step_slug, i),
           array_agg(k.delay ORDER BY k.pos, k.step_slug, i)
    INTO v_flows, v_runs, v_slugs, v_indexes, v_messages, v_delays
    FROM unnest(queue_started_steps.steps) AS k
    CROSS JOIN LATERAL generate_series(0, k.remaining_tasks - 1) AS i;
    IF v_flows IS NULL THEN
        RETURN;
    END IF;
    -- A batch is nearly always of one flow.
    FOR v_flow IN SELECT DISTINCT f FROM unnest(v_flows) AS f ORDER BY 1 LOOP
        IF v_flow = ALL (v_flows) THEN
            v_msg_ids := pgflow_kombu.queue_send(v_flow, v_messages, v_delays);
            INSERT INTO pgflow.step_tasks (flow_slug, run_id, step_slug, task_index, message_id)
            SELECT v_flow, t.run_id, t.step_slug, t.task_index, t.message_id
            FROM unnest(v_runs, v_slugs, v_indexes, v_msg_ids)
                 AS t(run_id, step_slug, task_index, message_id);
        ELSE
            WITH mine AS (
                SELECT t.* FROM unnest(v_flows, v_messages, v_delays)
                    WITH ORDINALITY AS t(flow_slug, message, delay, ord)
                WHERE t.flow_slug = v_flow
            ),
            sent AS (
                SELECT array_agg(m.ord ORDER BY m.ord) AS ords,
                       pgflow_kombu.queue_send(v_flow, array_agg(m.message ORDER BY m.ord),
                                               array_agg(m.delay ORDER BY m.ord)) AS ids
                FROM mine m
            )
            INSERT INTO pgflow.step_tasks (flow_slug, run_id, step_slug, task_index, message_id)
            SELECT v_flow, v_runs[x.ord], v_slugs[x.ord], v_indexes[x.ord], x.message_id
            FROM sent, unnest(sent.ords, sent.ids) AS x(ord, message_id);
        END IF;
    END LOOP;
END;
$$;

-- Starts, for a set of runs of any flows, the candidate steps (run_ids[i], step_slugs[i], at
-- position positions[i]) that are ready: created, no dependency left, a positive task count,
-- their run not failed. Each gets status started and its tasks (queue_started_steps). Returns
-- the started steps (their step:started events are the caller's, to merge with its own).
CREATE OR REPLACE FUNCTION pgflow_kombu.start_ready_steps_set(
    run_ids uuid[], step_slugs text[], positions bigint[]
) RETURNS pgflow_kombu.started_step[]
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_started pgflow_kombu.started_step[];
BEGIN
    WITH candidates AS (
        SELECT c.run_id, c.step_slug, min(c.pos) AS pos
        FROM unnest(start_ready_steps_set.run_ids, start_ready_steps_set.step_slugs,
                    start_ready_steps_set.positions) AS c(run_id, step_slug, pos)
        GROUP BY c.run_id, c.step_slug
    ),
    started AS (
        UPDATE pgflow.step_states ss
        SET status = 'started', started_at = now(), remaining_tasks = ss.initial_tasks
        FROM candidates c, pgflow.steps s
        WHERE ss.run_id = c.run_id AND ss.step_slug = c.step_slug
          AND ss.status = 'created' AND ss.remaining_deps = 0 AND ss.initial_tasks > 0
          AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
          AND NOT EXISTS (
              SELECT 1 FROM pgflow.runs r WHERE r.run_id = ss.run_id AND r.status = 'failed')
        RETURNING ss.flow_slug, ss.run_id, ss.step_slug, c.pos, ss.started_at,
                  ss.remaining_tasks, coalesce(s.opt_start_delay, 0) AS delay
    )
    SELECT coalesce(array_agg(ROW(k.flow_slug, k.run_id, k.step_slug, k.pos, k.started_at,
                                  k.remaining_tasks, k.delay)::pgflow_kombu.started_step
                              ORDER BY k.pos, k.step_slug), '{}')
    INTO v_started
    FROM started k;
    PERFORM pgflow_kombu.queue_started_steps(v_started);
    RETURN v_started;
END;
$$;

-- The step:<slug>:started events of started steps.
CREATE OR REPLACE FUNCTION pgflow_kombu.started_events(steps pgflow_kombu.started_step[])
RETURNS pgflow_kombu.pending_event[]
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
    SELECT coalesce(array_agg(ROW(k.pos, 1, k.step_slug, 'step:' || k.step_slug || ':started',
                                  'pgflow:run:' || k.run_id,
                                  jsonb_build_object(
                                      'event_type', 'step:started',
                                      'run_id', k.run_id,
                                      'step_slug', k.step_slug,
                                      'status', 'started',
                                      'started_at', k.started_at,
                                      'remaining_tasks', k.remaining_tasks,
                                      'remaining_deps', 0))::pgflow_kombu.pending_event),
                    '{}')
    FROM unnest(steps) AS k
$$;

-- Starts one run of flow_slug per element of inputs, as pgflow.start_flow called once per input
-- in that order would (through pgflow_kombu.start_flow_delayed when delay_seconds > 0, through
-- pgflow_kombu.start_flow_controlled when priority or keys are given, keys[i] being run i's
-- concurrency keys), and records the runs' trace context when traceparent is given. run_ids[i],
-- when given and not NULL, is run i's id. Returns (ordinal, run_id) per input, in order. Bad
-- input fails as the first failing per-row call would, and starts nothing.
CREATE OR REPLACE FUNCTION pgflow_kombu.start_flows(
    flow_slug text,
    inputs jsonb[],
    run_ids uuid[] DEFAULT NULL,
    delay_seconds integer DEFAULT 0,
    priority integer DEFAULT NULL,
    keys jsonb[] DEFAULT NULL,
    traceparent text DEFAULT NULL,
    tracestate text DEFAULT NULL
) RETURNS TABLE (ordinal integer, run_id uuid)
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_ours boolean := to_regprocedure(
        'pgflow_kombu.complete_task_core(uuid,text,integer,jsonb,boolean)') IS NOT NULL;
    v_controlled boolean := start_flows.priority IS NOT NULL OR start_flows.keys IS NOT NULL;
    v_delay integer := coalesce(start_flows.delay_seconds, 0);
    v_steps integer;
    v_root_maps integer;
    v_conditions boolean;
    v_ids uuid[];
    v_bad record;
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_events pgflow_kombu.pending_event[];
    v_row record;
    v_taskless boolean[];
    v_started pgflow_kombu.started_step[];
    v_stretch pgflow_kombu.started_step[];
    i integer;
BEGIN
    IF v_delay < 0 THEN
        RAISE EXCEPTION 'delay_seconds must be >= 0, got %', v_delay;
    END IF;
    IF start_flows.keys IS NOT NULL
       AND cardinality(start_flows.keys) <> cardinality(start_flows.inputs) THEN
        RAISE EXCEPTION 'keys has % elements but inputs has %', cardinality(start_flows.keys),
            cardinality(start_flows.inputs) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF start_flows.run_ids IS NOT NULL
       AND cardinality(start_flows.run_ids) <> cardinality(start_flows.inputs) THEN
        RAISE EXCEPTION 'run_ids has % elements but inputs has %', cardinality(start_flows.run_ids),
            cardinality(start_flows.inputs) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(start_flows.inputs), 0) = 0 THEN
        RETURN;
    END IF;

    SELECT count(*), count(*) FILTER (WHERE s.step_type = 'map' AND s.deps_count = 0),
           EXISTS (SELECT 1 FROM pgflow_kombu.step_conditions c
                   WHERE c.flow_slug = start_flows.flow_slug)
    INTO v_steps, v_root_maps, v_conditions
    FROM pgflow.steps s
    WHERE s.flow_slug = start_flows.flow_slug;

    IF NOT v_ours OR v_conditions OR v_steps = 0 THEN
        -- Per row: an upstream schema, conditions evaluated as each run starts, or a flow
        -- without steps (its runs complete at once).
        FOR i IN 1 .. cardinality(start_flows.inputs) LOOP
            ordinal := i;
            IF v_controlled THEN
                run_id := pgflow_kombu.start_flow_controlled(
                    start_flows.flow_slug, start_flows.inputs[i], start_flows.run_ids[i], v_delay,
                    start_flows.priority, coalesce(start_flows.keys[i], '{}'));
            ELSE
                run_id := pgflow_kombu.start_flow_delayed(
                    start_flows.flow_slug, start_flows.inputs[i], start_flows.run_ids[i], v_delay);
            END IF;
            IF start_flows.traceparent IS NOT NULL THEN
                INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
                VALUES (run_id, start_flows.traceparent, start_flows.tracestate);
            END IF;
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;

    -- A root map's input is checked first, the first bad one raising what start_flow raises.
    IF v_root_maps > 0 THEN
        SELECT x.input INTO v_bad
        FROM unnest(start_flows.inputs) WITH ORDINALITY AS x(input, ord)
        WHERE x.input IS NULL OR jsonb_typeof(x.input) <> 'array'
        ORDER BY x.ord LIMIT 1;
        IF FOUND THEN
            IF v_bad.input IS NULL THEN
                RAISE EXCEPTION 'Flow % has root map steps but input is NULL',
                    start_flows.flow_slug;
            END IF;
            RAISE EXCEPTION 'Flow % has root map steps but input is not an array (got %)',
                start_flows.flow_slug, jsonb_typeof(v_bad.input);
        END IF;
    END IF;

    v_ids := ARRAY(
        SELECT coalesce(start_flows.run_ids[x.ord], gen_random_uuid())
        FROM generate_series(1, cardinality(start_flows.inputs)) AS x(ord)
        ORDER BY x.ord);

    -- Runs, their step states, then the control rows of 0060 and the trace context of 0080.
    WITH runs AS (
        INSERT INTO pgflow.runs (run_id, flow_slug, input, remaining_steps)
        SELECT x.run_id, start_flows.flow_slug, x.input, v_steps
        FROM unnest(v_ids, start_flows.inputs) WITH ORDINALITY AS x(run_id, input, ord)
        ORDER BY x.ord
        RETURNING run_id, input, remaining_steps, started_at
    )
    SELECT CASE WHEN v_rt THEN array_agg(ROW(x.ord, 0, '', 'run:started', 'pgflow:run:' || r.run_id,
                         jsonb_build_object(
                             'event_type', 'run:started',
                             'run_id', r.run_id,
                             'flow_slug', start_flows.flow_slug,
                             'input', r.input,
                             'status', 'started',
                             'remaining_steps', r.remaining_steps,
                             'started_at', r.started_at))::pgflow_kombu.pending_event) END
    INTO v_events
    FROM runs r
    JOIN unnest(v_ids) WITH ORDINALITY AS x(run_id, ord) ON x.run_id = r.run_id;

    -- A run whose root map got an empty array starts as start_flow has it (the taskless
    -- cascade first); the others' root steps are inserted started (one write per step).
    v_taskless := ARRAY(
        SELECT CASE WHEN v_root_maps > 0 THEN jsonb_array_length(x.input) = 0 ELSE false END
        FROM unnest(start_flows.inputs) WITH ORDINALITY AS x(input, ord)
        ORDER BY x.ord);
    WITH created AS (
        INSERT INTO pgflow.step_states (
            flow_slug, run_id, step_slug, remaining_deps, initial_tasks,
            status, started_at, remaining_tasks
        )
        SELECT s.flow_slug, x.run_id, s.step_slug, s.deps_count, n.tasks,
               CASE WHEN n.starts THEN 'started' ELSE 'created' END,
               CASE WHEN n.starts THEN now() END,
               CASE WHEN n.starts THEN n.tasks END
        FROM unnest(v_ids, start_flows.inputs) WITH ORDINALITY AS x(run_id, input, ord)
        CROSS JOIN pgflow.steps s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN s.step_type <> 'map' THEN 1
                        WHEN s.deps_count = 0 THEN jsonb_array_length(x.input) END AS tasks,
                   s.deps_count = 0 AND NOT v_taskless[x.ord] AS starts
        ) n
        WHERE s.flow_slug = start_flows.flow_slug
        ORDER BY x.ord, s.step_index
        RETURNING flow_slug, run_id, step_slug, status, started_at, remaining_tasks
    )
    SELECT coalesce(array_agg(ROW(c.flow_slug, c.run_id, c.step_slug, x.ord, c.started_at,
                                  c.remaining_tasks,
                                  greatest(coalesce(s.opt_start_delay, 0), v_delay)
                              )::pgflow_kombu.started_step ORDER BY x.ord, c.step_slug), '{}')
    INTO v_started
    FROM created c
    JOIN unnest(v_ids) WITH ORDINALITY AS x(run_id, ord) ON x.run_id = c.run_id
    JOIN pgflow.steps s ON s.flow_slug = c.flow_slug AND s.step_slug = c.step_slug
    WHERE c.status = 'started';

    IF v_controlled THEN
        INSERT INTO pgflow_kombu.run_controls (run_id, flow_slug, priority, keys)
        SELECT x.run_id, start_flows.flow_slug, start_flows.priority,
               coalesce(start_flows.keys[x.ord], '{}')
        FROM unnest(v_ids) WITH ORDINALITY AS x(run_id, ord);
        IF start_flows.priority IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pgflow_kombu.flow_limits AS l
            WHERE l.flow_slug = start_flows.flow_slug AND l.step_slug = '' AND l.prioritized) THEN
            INSERT INTO pgflow_kombu.flow_limits AS l (flow_slug, step_slug, prioritized)
            VALUES (start_flows.flow_slug, '', true)
            ON CONFLICT ON CONSTRAINT flow_limits_pkey DO UPDATE SET prioritized = true;
        END IF;
    END IF;
    IF start_flows.traceparent IS NOT NULL THEN
        INSERT INTO pgflow_kombu.run_trace_context (run_id, traceparent, tracestate)
        SELECT x.run_id, start_flows.traceparent, start_flows.tracestate
        FROM unnest(v_ids) AS x(run_id);
    END IF;

    -- Tasks and events, run after run: runs in a stretch without an empty root map together,
    -- the others one at a time through start_flow's functions.
    FOR v_row IN
        SELECT p.taskless, min(p.ord) AS first, max(p.ord) AS last
        FROM (SELECT x.ord, x.taskless,
                     x.ord - row_number() OVER (PARTITION BY x.taskless ORDER BY x.ord) AS segment
              FROM unnest(v_taskless) WITH ORDINALITY AS x(taskless, ord)) AS p
        GROUP BY p.taskless, p.segment
        ORDER BY min(p.ord)
    LOOP
        IF v_row.taskless THEN
            FOR i IN v_row.first .. v_row.last LOOP
                IF v_rt THEN
                    PERFORM pgflow_kombu.send_events(ARRAY(
                        SELECT e FROM unnest(v_events) AS e WHERE e.pos = i));
                END IF;
                PERFORM pgflow.cascade_complete_taskless_steps(v_ids[i]);
                PERFORM pgflow.start_ready_steps(v_ids[i]);
                PERFORM pgflow.maybe_complete_run(v_ids[i]);
                IF v_delay > 0 THEN
                    PERFORM pgmq.set_vt(t.flow_slug, t.message_id, v_delay)
                    FROM pgflow.step_tasks AS t
                    WHERE t.run_id = v_ids[i] AND t.status = 'queued'
                      AND t.message_id IS NOT NULL
                      AND NOT EXISTS (
                          SELECT 1 FROM pgflow.steps AS s
                          WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
                            AND coalesce(s.opt_start_delay, 0) >= v_delay);
                END IF;
            END LOOP;
        ELSE
            IF v_row.first > 1 OR v_row.last < cardinality(v_ids) THEN
                v_stretch := ARRAY(SELECT k FROM unnest(v_started) AS k
                                   WHERE k.pos BETWEEN v_row.first AND v_row.last);
            ELSE
                v_stretch := v_started;
            END IF;
            PERFORM pgflow_kombu.queue_started_steps(v_stretch);
            IF v_rt THEN
                PERFORM pgflow_kombu.send_events(
                    ARRAY(SELECT e FROM unnest(v_events) AS e
                          WHERE e.pos BETWEEN v_row.first AND v_row.last)
                    || pgflow_kombu.started_events(v_stretch));
            END IF;
        END IF;
    END LOOP;

    RETURN QUERY SELECT x.ord::integer, x.run_id FROM unnest(v_ids) WITH ORDINALITY AS x(run_id, ord);
END;
$$;

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
LANGUAGE plpgsql SET search_path = '' AS $$
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
LANGUAGE plpgsql SET search_path = '' AS $$
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
LANGUAGE plpgsql SET search_path = '' AS $$
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
