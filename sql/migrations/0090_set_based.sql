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
-- a dependent map's type check, runs whose last attempt failed in the batch. On a pgflow schema
-- installed by upstream (no pgflow_kombu.complete_task_core) everything goes per row, through
-- its functions. This file: starting steps and runs; 0091: completing and retrying a batch of
-- tasks; 0092: report_tasks on top of them.

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
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
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
    -- One sort: the aggregates read the ordered rows in turn.
    SELECT array_agg(t.flow_slug), array_agg(t.run_id), array_agg(t.step_slug),
           array_agg(t.i), array_agg(jsonb_build_object('flow_slug', t.flow_slug,
                                                        'run_id', t.run_id,
                                                        'step_slug', t.step_slug,
                                                        'task_index', t.i)),
           array_agg(t.delay)
    INTO v_flows, v_runs, v_slugs, v_indexes, v_messages, v_delays
    FROM (
        SELECT k.flow_slug, k.run_id, k.step_slug, i, k.delay
        FROM unnest(queue_started_steps.steps) AS k
        CROSS JOIN LATERAL generate_series(0, k.remaining_tasks - 1) AS i
        ORDER BY k.pos, k.step_slug, i
    ) AS t;
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
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
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
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
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
