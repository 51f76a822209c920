-- Schema `pgflow`: the pgflow 0.8.1 database contract (tables, constraints, indexes, functions).
--
-- Shared with the TypeScript/Deno and Elixir pgflow workers, so every table, column, constraint,
-- index name, status value, function signature, event and error string matches pgflow 0.8.1.
-- The function bodies are our own: plpgsql with cached plans, few statements per call, work done
-- only when it can change something (start_ready_steps only after a step completed, the
-- empty-map cascade only when a map has no tasks, maybe_complete_run only when no step remains).
--
-- Events go through Supabase's realtime.send(payload, event, topic, private) when that function
-- exists; each function checks once per call (a namespace lookup, then the signature), so a
-- plain PostgreSQL pays one syscache probe and nothing fails.
--
-- Requires pgmq >= 1.5 in schema `pgmq` (message records with headers).
--
-- Bad input raises what pgflow 0.8.1 raises (SQLSTATE, message, constraint), mostly by leaving
-- it to the same constraints: TypeScript tools and SQL users match on those errors. The Python
-- layer validates definitions first and explains the problem in its own words.
--
-- Where this deliberately differs from pgflow 0.8.1 (each listed, with its reason, in
-- tests/integration/test_differential_divergences.py):
-- * a repeated complete_task on a completed task changes nothing (0.8.1 re-sends
--   step:<slug>:completed and re-runs the empty-map cascade);
-- * start_tasks returns only the tasks it moved to started (0.8.1 also returns tasks a
--   concurrent call claimed first);
-- * add_step refuses a dependency listed twice (0.8.1 would count it twice and the step could
--   never start);
-- * a completed task has no error_message (0.8.1 keeps the one of an earlier failed attempt);
-- * without Supabase's realtime.send the functions work (0.8.1 calls it unconditionally).
-- Events of steps that start or complete together follow step_slug / step_index order by
-- construction (0.8.1 asks for that order, but sends them in the order an UPDATE visits rows).
-- Conditional steps (0070_conditions) hook in here: start_flow, start_ready_steps and the
-- empty-map cascade evaluate the conditions of ready steps, fail_task applies when_exhausted,
-- start_tasks and run_output leave skipped steps out. A flow without conditions pays index probes
-- of (empty) pgflow_kombu tables: per start_flow, per completed task, per dependency start_tasks
-- reads and per leaf of the run output (benchmarks/conditions.py measures it).

DO $check$
BEGIN
    IF to_regnamespace('pgmq') IS NULL THEN
        RAISE EXCEPTION 'pgflow needs pgmq: schema "pgmq" not found (install pgmq >= 1.5 first)';
    END IF;
    IF NOT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.typrelid = a.attrelid
        WHERE t.oid = to_regtype('pgmq.message_record')
          AND a.attname = 'headers' AND a.attnum > 0 AND NOT a.attisdropped
    ) THEN
        RAISE EXCEPTION 'pgflow 0.8.1 needs pgmq >= 1.5 (pgmq.message_record has no "headers" column)';
    END IF;
END
$check$;

CREATE SCHEMA pgflow;
-- Private helpers of our pgflow functions (not part of the contract) live in our own schema.
CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- ---------------------------------------------------------------------------------------------
-- Slugs and retry delays
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgflow.is_valid_slug(slug text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = '' AS $$
    SELECT slug IS NOT NULL
       AND slug <> ''
       AND length(slug) <= 128
       AND slug ~ '^[a-zA-Z_][a-zA-Z0-9_]*$'
       AND slug <> 'run'
$$;

CREATE FUNCTION pgflow.calculate_retry_delay(base_delay numeric, attempts_count integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = '' AS $$
    SELECT floor(base_delay * power(2, attempts_count))::integer
$$;

-- ---------------------------------------------------------------------------------------------
-- Tables (column order is part of the contract: SELECT * and to_jsonb expose it)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE pgflow.flows (
    flow_slug text NOT NULL,
    opt_max_attempts integer NOT NULL DEFAULT 3,
    opt_base_delay integer NOT NULL DEFAULT 1,
    opt_timeout integer NOT NULL DEFAULT 60,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT flows_pkey PRIMARY KEY (flow_slug),
    CONSTRAINT opt_base_delay_is_nonnegative CHECK (opt_base_delay >= 0),
    CONSTRAINT opt_max_attempts_is_nonnegative CHECK (opt_max_attempts >= 0),
    CONSTRAINT opt_timeout_is_positive CHECK (opt_timeout > 0),
    CONSTRAINT slug_is_valid CHECK (pgflow.is_valid_slug(flow_slug))
);

CREATE TABLE pgflow.steps (
    flow_slug text NOT NULL,
    step_slug text NOT NULL,
    step_type text NOT NULL DEFAULT 'single',
    step_index integer NOT NULL DEFAULT 0,
    deps_count integer NOT NULL DEFAULT 0,
    opt_max_attempts integer,
    opt_base_delay integer,
    opt_timeout integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    opt_start_delay integer,
    CONSTRAINT steps_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT steps_flow_slug_step_index_key UNIQUE (flow_slug, step_index),
    CONSTRAINT steps_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT opt_base_delay_is_nonnegative CHECK (opt_base_delay IS NULL OR opt_base_delay >= 0),
    CONSTRAINT opt_max_attempts_is_nonnegative
        CHECK (opt_max_attempts IS NULL OR opt_max_attempts >= 0),
    CONSTRAINT opt_timeout_is_positive CHECK (opt_timeout IS NULL OR opt_timeout > 0),
    CONSTRAINT steps_deps_count_check CHECK (deps_count >= 0),
    CONSTRAINT steps_step_slug_check CHECK (pgflow.is_valid_slug(step_slug)),
    CONSTRAINT steps_step_type_check CHECK (step_type IN ('single', 'map')),
    CONSTRAINT opt_start_delay_is_nonnegative CHECK (opt_start_delay IS NULL OR opt_start_delay >= 0)
);

CREATE TABLE pgflow.deps (
    flow_slug text NOT NULL,
    dep_slug text NOT NULL,
    step_slug text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deps_pkey PRIMARY KEY (flow_slug, dep_slug, step_slug),
    CONSTRAINT deps_flow_slug_dep_slug_fkey FOREIGN KEY (flow_slug, dep_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug),
    CONSTRAINT deps_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT deps_flow_slug_step_slug_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug),
    CONSTRAINT deps_check CHECK (dep_slug <> step_slug)
);
CREATE INDEX idx_deps_by_flow_dep ON pgflow.deps (flow_slug, dep_slug);
CREATE INDEX idx_deps_by_flow_step ON pgflow.deps (flow_slug, step_slug);

CREATE TABLE pgflow.runs (
    run_id uuid NOT NULL DEFAULT gen_random_uuid(),
    flow_slug text NOT NULL,
    status text NOT NULL DEFAULT 'started',
    input jsonb NOT NULL,
    output jsonb,
    remaining_steps integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    failed_at timestamptz,
    CONSTRAINT runs_pkey PRIMARY KEY (run_id),
    CONSTRAINT runs_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT completed_at_is_after_started_at
        CHECK (completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT completed_at_or_failed_at
        CHECK (NOT (completed_at IS NOT NULL AND failed_at IS NOT NULL)),
    CONSTRAINT failed_at_is_after_started_at CHECK (failed_at IS NULL OR failed_at >= started_at),
    CONSTRAINT runs_remaining_steps_check CHECK (remaining_steps >= 0),
    CONSTRAINT status_is_valid CHECK (status IN ('started', 'failed', 'completed'))
);
CREATE INDEX idx_runs_flow_slug ON pgflow.runs (flow_slug);
CREATE INDEX idx_runs_status ON pgflow.runs (status);

CREATE TABLE pgflow.step_states (
    flow_slug text NOT NULL,
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    status text NOT NULL DEFAULT 'created',
    remaining_tasks integer,
    remaining_deps integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    error_message text,
    initial_tasks integer,
    CONSTRAINT step_states_pkey PRIMARY KEY (run_id, step_slug),
    CONSTRAINT step_states_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT step_states_flow_slug_step_slug_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug),
    CONSTRAINT step_states_run_id_fkey FOREIGN KEY (run_id) REFERENCES pgflow.runs (run_id),
    CONSTRAINT completed_at_is_after_started_at
        CHECK (completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT completed_at_or_failed_at
        CHECK (NOT (completed_at IS NOT NULL AND failed_at IS NOT NULL)),
    CONSTRAINT failed_at_is_after_started_at CHECK (failed_at IS NULL OR failed_at >= started_at),
    CONSTRAINT started_at_is_after_created_at CHECK (started_at IS NULL OR started_at >= created_at),
    CONSTRAINT status_and_remaining_tasks_match CHECK (status <> 'completed' OR remaining_tasks = 0),
    CONSTRAINT status_is_valid CHECK (status IN ('created', 'started', 'completed', 'failed')),
    CONSTRAINT step_states_remaining_deps_check CHECK (remaining_deps >= 0),
    CONSTRAINT initial_tasks_known_when_started
        CHECK (status <> 'started' OR initial_tasks IS NOT NULL),
    CONSTRAINT remaining_tasks_state_consistency
        CHECK (remaining_tasks IS NULL OR status <> 'created'),
    CONSTRAINT step_states_initial_tasks_check CHECK (initial_tasks IS NULL OR initial_tasks >= 0)
);
CREATE INDEX idx_step_states_failed ON pgflow.step_states (run_id, step_slug)
    WHERE status = 'failed';
CREATE INDEX idx_step_states_flow_slug ON pgflow.step_states (flow_slug);
CREATE INDEX idx_step_states_ready ON pgflow.step_states (run_id, status, remaining_deps)
    WHERE status = 'created' AND remaining_deps = 0;
CREATE INDEX idx_step_states_run_id ON pgflow.step_states (run_id);

CREATE TABLE pgflow.workers (
    worker_id uuid NOT NULL,
    queue_name text NOT NULL,
    function_name text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    deprecated_at timestamptz,
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workers_pkey PRIMARY KEY (worker_id)
);
CREATE INDEX idx_workers_queue_name ON pgflow.workers (queue_name);
CREATE INDEX idx_workers_heartbeat ON pgflow.workers (last_heartbeat_at);

CREATE TABLE pgflow.step_tasks (
    flow_slug text NOT NULL,
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    message_id bigint,
    task_index integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'queued',
    attempts_count integer NOT NULL DEFAULT 0,
    error_message text,
    output jsonb,
    queued_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    failed_at timestamptz,
    started_at timestamptz,
    last_worker_id uuid,
    CONSTRAINT step_tasks_pkey PRIMARY KEY (run_id, step_slug, task_index),
    CONSTRAINT step_tasks_flow_slug_fkey FOREIGN KEY (flow_slug) REFERENCES pgflow.flows (flow_slug),
    CONSTRAINT step_tasks_run_id_fkey FOREIGN KEY (run_id) REFERENCES pgflow.runs (run_id),
    CONSTRAINT step_tasks_run_id_step_slug_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug),
    CONSTRAINT step_tasks_last_worker_id_fkey FOREIGN KEY (last_worker_id)
        REFERENCES pgflow.workers (worker_id) ON DELETE SET NULL,
    CONSTRAINT attempts_count_nonnegative CHECK (attempts_count >= 0),
    CONSTRAINT completed_at_is_after_queued_at CHECK (completed_at IS NULL OR completed_at >= queued_at),
    CONSTRAINT completed_at_or_failed_at
        CHECK (NOT (completed_at IS NOT NULL AND failed_at IS NOT NULL)),
    CONSTRAINT failed_at_is_after_queued_at CHECK (failed_at IS NULL OR failed_at >= queued_at),
    CONSTRAINT output_valid_only_for_completed
        CHECK (output IS NULL OR status IN ('completed', 'failed')),
    CONSTRAINT valid_status CHECK (status IN ('queued', 'started', 'completed', 'failed')),
    CONSTRAINT completed_at_is_after_started_at
        CHECK (completed_at IS NULL OR started_at IS NULL OR completed_at >= started_at),
    CONSTRAINT failed_at_is_after_started_at
        CHECK (failed_at IS NULL OR started_at IS NULL OR failed_at >= started_at),
    CONSTRAINT started_at_is_after_queued_at CHECK (started_at IS NULL OR started_at >= queued_at)
);
CREATE INDEX idx_step_tasks_completed ON pgflow.step_tasks (run_id, step_slug)
    WHERE status = 'completed';
CREATE INDEX idx_step_tasks_failed ON pgflow.step_tasks (run_id, step_slug)
    WHERE status = 'failed';
CREATE INDEX idx_step_tasks_flow_run_step ON pgflow.step_tasks (flow_slug, run_id, step_slug);
CREATE INDEX idx_step_tasks_message_id ON pgflow.step_tasks (message_id);
CREATE INDEX idx_step_tasks_queued ON pgflow.step_tasks (run_id, step_slug)
    WHERE status = 'queued';
CREATE INDEX idx_step_tasks_last_worker ON pgflow.step_tasks (last_worker_id)
    WHERE status = 'started';
CREATE INDEX idx_step_tasks_queued_msg ON pgflow.step_tasks (message_id)
    WHERE status = 'queued';
CREATE INDEX idx_step_tasks_started ON pgflow.step_tasks (started_at)
    WHERE status = 'started';

CREATE TYPE pgflow.step_task_record AS (
    flow_slug text,
    run_id uuid,
    step_slug text,
    input jsonb,
    msg_id bigint,
    task_index integer
);

-- ---------------------------------------------------------------------------------------------
-- Flow definition
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgflow.create_flow(
    flow_slug text,
    max_attempts integer DEFAULT 3,
    base_delay integer DEFAULT 5,
    timeout integer DEFAULT 60
) RETURNS pgflow.flows
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_flow pgflow.flows;
BEGIN
    -- Bad input fails as in pgflow 0.8.1, on the table's constraints (not-null first, then the
    -- check constraints in name order); a slug too long for a queue name fails in pgmq.create.
    INSERT INTO pgflow.flows (flow_slug, opt_max_attempts, opt_base_delay, opt_timeout)
    VALUES (create_flow.flow_slug, create_flow.max_attempts, create_flow.base_delay, create_flow.timeout)
    ON CONFLICT (flow_slug) DO NOTHING
    RETURNING * INTO v_flow;
    IF NOT FOUND THEN
        -- An existing flow keeps its options.
        SELECT * INTO v_flow FROM pgflow.flows f WHERE f.flow_slug = create_flow.flow_slug;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pgmq.list_queues() q WHERE q.queue_name = create_flow.flow_slug) THEN
        PERFORM pgmq.create(create_flow.flow_slug);
    END IF;
    RETURN v_flow;
END;
$$;

CREATE FUNCTION pgflow.add_step(
    flow_slug text,
    step_slug text,
    deps_slugs text[] DEFAULT '{}',
    max_attempts integer DEFAULT NULL,
    base_delay integer DEFAULT NULL,
    timeout integer DEFAULT NULL,
    start_delay integer DEFAULT NULL,
    step_type text DEFAULT 'single'
) RETURNS pgflow.steps
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_type text := coalesce(add_step.step_type, 'single');
    v_deps text[] := coalesce(add_step.deps_slugs, '{}');
    v_dup text;
    v_step pgflow.steps;
BEGIN
    -- Bad input fails as in pgflow 0.8.1: a map with several dependencies first, then the
    -- steps row's constraints (not-null, checks in name order, the flow's foreign key at the end
    -- of the statement), then the deps rows' (deps_check row by row, then the foreign keys).
    IF v_type = 'map' AND coalesce(array_length(add_step.deps_slugs, 1), 0) > 1 THEN
        RAISE EXCEPTION 'Map step "%" can have at most one dependency, but % were provided: %',
            add_step.step_slug, coalesce(array_length(add_step.deps_slugs, 1), 0),
            array_to_string(add_step.deps_slugs, ', ');
    END IF;

    -- Lock the flow row: concurrent add_step calls on one flow then take step indexes in turn.
    PERFORM 1 FROM pgflow.flows f WHERE f.flow_slug = add_step.flow_slug FOR UPDATE;

    INSERT INTO pgflow.steps (
        flow_slug, step_slug, step_type, step_index, deps_count,
        opt_max_attempts, opt_base_delay, opt_timeout, opt_start_delay
    )
    SELECT add_step.flow_slug, add_step.step_slug, v_type, coalesce(max(s.step_index) + 1, 0),
           coalesce(array_length(add_step.deps_slugs, 1), 0), add_step.max_attempts,
           add_step.base_delay, add_step.timeout, add_step.start_delay
    FROM pgflow.steps s
    WHERE s.flow_slug = add_step.flow_slug
    ON CONFLICT (flow_slug, step_slug) DO NOTHING
    RETURNING * INTO v_step;
    IF NOT FOUND THEN
        -- An existing step keeps its definition.
        SELECT * INTO v_step
        FROM pgflow.steps s
        WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;
    END IF;

    INSERT INTO pgflow.deps (flow_slug, dep_slug, step_slug)
    SELECT add_step.flow_slug, d, add_step.step_slug
    FROM unnest(v_deps) d
    ON CONFLICT (flow_slug, dep_slug, step_slug) DO NOTHING;

    -- Deliberate difference: 0.8.1 accepts a dependency listed twice, counts it twice in
    -- deps_count and records it once, so the step could never start.
    SELECT d INTO v_dup FROM unnest(v_deps) d GROUP BY d HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'dependency "%" of step "%" is listed twice', v_dup, add_step.step_slug
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    RETURN v_step;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- Run lifecycle
-- ---------------------------------------------------------------------------------------------

-- Completes, wave by wave, the created steps that have no dependency left and no task (maps over
-- an empty array); a map depending on such a step learns it has no task either. As in pgflow
-- 0.8.1, the 51st pass (counting the last one, which finds nothing) raises instead: a chain of
-- 50 or more taskless steps fails the calling start_flow or complete_task, leaving nothing.
CREATE FUNCTION pgflow.cascade_complete_taskless_steps(run_id uuid) RETURNS integer
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_total integer := 0;
    v_done integer;
    v_events jsonb;
    v_event jsonb;
    v_passes integer := 0;
    v_max_passes constant integer := 50;
    v_conditions boolean := EXISTS (
        SELECT 1 FROM pgflow.runs r
        JOIN pgflow_kombu.step_conditions c ON c.flow_slug = r.flow_slug
        WHERE r.run_id = cascade_complete_taskless_steps.run_id);
BEGIN
    LOOP
        v_passes := v_passes + 1;
        IF v_passes > v_max_passes THEN
            RAISE EXCEPTION 'Cascade loop exceeded safety limit of % iterations', v_max_passes;
        END IF;
        -- A conditional step is decided when it becomes ready, before a taskless one completes.
        IF v_conditions
           AND NOT pgflow_kombu.resolve_conditions(cascade_complete_taskless_steps.run_id) THEN
            EXIT;
        END IF;
        WITH done AS (
            UPDATE pgflow.step_states ss
            SET status = 'completed', started_at = now(), completed_at = now(), remaining_tasks = 0
            WHERE ss.run_id = cascade_complete_taskless_steps.run_id
              AND ss.status = 'created' AND ss.remaining_deps = 0 AND ss.initial_tasks = 0
            RETURNING ss.flow_slug, ss.step_slug, ss.started_at, ss.completed_at
        ),
        dependents AS (
            UPDATE pgflow.step_states cs
            SET remaining_deps = cs.remaining_deps - k.n,
                initial_tasks = CASE WHEN c.step_type = 'map' THEN 0 ELSE cs.initial_tasks END
            FROM (
                SELECT d.flow_slug, d.step_slug, count(*)::integer AS n
                FROM done
                JOIN pgflow.deps d ON d.flow_slug = done.flow_slug AND d.dep_slug = done.step_slug
                GROUP BY d.flow_slug, d.step_slug
            ) k
            JOIN pgflow.steps c ON c.flow_slug = k.flow_slug AND c.step_slug = k.step_slug
            WHERE cs.run_id = cascade_complete_taskless_steps.run_id AND cs.step_slug = k.step_slug
        ),
        run AS (
            UPDATE pgflow.runs r
            SET remaining_steps = r.remaining_steps - (SELECT count(*) FROM done)
            WHERE r.run_id = cascade_complete_taskless_steps.run_id AND EXISTS (SELECT 1 FROM done)
        )
        SELECT count(*),
               jsonb_agg(jsonb_build_object(
                   'step_slug', done.step_slug,
                   'started_at', done.started_at,
                   'completed_at', done.completed_at
               ) ORDER BY s.step_index)
        INTO v_done, v_events
        FROM done
        JOIN pgflow.steps s ON s.flow_slug = done.flow_slug AND s.step_slug = done.step_slug;

        EXIT WHEN v_done = 0;
        v_total := v_total + v_done;
        IF v_rt THEN
            FOR v_event IN SELECT e FROM jsonb_array_elements(v_events) e LOOP
                PERFORM realtime.send(
                    jsonb_build_object(
                        'event_type', 'step:completed',
                        'run_id', cascade_complete_taskless_steps.run_id,
                        'step_slug', v_event->>'step_slug',
                        'status', 'completed',
                        'started_at', v_event->'started_at',
                        'completed_at', v_event->'completed_at',
                        'remaining_tasks', 0,
                        'remaining_deps', 0,
                        'output', '[]'::jsonb
                    ),
                    'step:' || (v_event->>'step_slug') || ':completed',
                    'pgflow:run:' || cascade_complete_taskless_steps.run_id,
                    false
                );
            END LOOP;
        END IF;
    END LOOP;
    RETURN v_total;
END;
$$;

-- Sends one pgmq message per task of the given steps (step i gets task_counts[i] tasks, delayed by
-- delays[i] seconds) and records the tasks as queued, in step then task_index order (msg_ids
-- follow that order). Messages are built by cached statements and written by queue_send
-- (0003_queue_statements), as pgmq.send_batch would, minus its layers of functions and its
-- dynamic statement.
CREATE FUNCTION pgflow_kombu.queue_step_tasks(
    flow_slug text,
    run_id uuid,
    step_slugs text[],
    task_counts integer[],
    delays integer[]
) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_slugs text[];
    v_indexes integer[];
    v_messages jsonb[];
    v_delays integer[];
    v_msg_ids bigint[];
BEGIN
    IF cardinality(queue_step_tasks.step_slugs) = 1 AND queue_step_tasks.task_counts[1] = 1 THEN
        -- The common case, one single step: no statement needed to build the message.
        v_slugs := queue_step_tasks.step_slugs;
        v_indexes := '{0}';
        v_delays := queue_step_tasks.delays;
        v_messages := ARRAY[jsonb_build_object('flow_slug', queue_step_tasks.flow_slug,
                                               'run_id', queue_step_tasks.run_id,
                                               'step_slug', queue_step_tasks.step_slugs[1],
                                               'task_index', 0)];
    ELSE
        SELECT array_agg(s.step_slug ORDER BY s.ord, i),
               array_agg(i ORDER BY s.ord, i),
               array_agg(jsonb_build_object('flow_slug', queue_step_tasks.flow_slug,
                                            'run_id', queue_step_tasks.run_id,
                                            'step_slug', s.step_slug,
                                            'task_index', i) ORDER BY s.ord, i),
               array_agg(s.delay ORDER BY s.ord, i)
        INTO v_slugs, v_indexes, v_messages, v_delays
        FROM unnest(queue_step_tasks.step_slugs, queue_step_tasks.task_counts,
                    queue_step_tasks.delays) WITH ORDINALITY AS s(step_slug, n, delay, ord)
        CROSS JOIN LATERAL generate_series(0, s.n - 1) AS i;
    END IF;

    v_msg_ids := pgflow_kombu.queue_send(queue_step_tasks.flow_slug, v_messages, v_delays);

    INSERT INTO pgflow.step_tasks (flow_slug, run_id, step_slug, task_index, message_id)
    SELECT queue_step_tasks.flow_slug, queue_step_tasks.run_id, t.step_slug, t.task_index,
           t.message_id
    FROM unnest(v_slugs, v_indexes, v_msg_ids) AS t(step_slug, task_index, message_id);
END;
$$;

-- The output of a completed run: each leaf step (one no step depends on) mapped to its output, a
-- map leaf to the array of its task outputs ([] without tasks); NULL for a flow without steps.
-- A skipped leaf is left out (NULL when every leaf was skipped), as in pgflow 0.14.
-- PL/pgSQL rather than SQL: its plan is cached for the session, where a SQL function that cannot
-- be inlined is parsed and planned again on every call (most of a run's completion cost).
CREATE FUNCTION pgflow_kombu.run_output(run_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
    RETURN (SELECT jsonb_object_agg(
        ss.step_slug,
        CASE WHEN s.step_type = 'map' THEN (
            SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
            FROM pgflow.step_tasks t
            WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug AND t.status = 'completed'
        ) ELSE (
            SELECT t.output
            FROM pgflow.step_tasks t
            WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug AND t.status = 'completed'
            LIMIT 1
        ) END
    )
    FROM pgflow.step_states ss
    JOIN pgflow.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    WHERE ss.run_id = run_output.run_id
      AND ss.status = 'completed'
      AND NOT EXISTS (
          SELECT 1 FROM pgflow.deps d WHERE d.flow_slug = ss.flow_slug AND d.dep_slug = ss.step_slug
      )
      AND NOT EXISTS (
          SELECT 1 FROM pgflow_kombu.skipped_steps k
          WHERE k.run_id = ss.run_id AND k.step_slug = ss.step_slug
      ));
END;
$$;

-- Starts every created step of the run whose dependencies are done and whose task count is known
-- and positive: one step_task and one pgmq message per task, in step_slug then task_index order,
-- delayed by the step's start_delay (first send only; retries use the backoff). In a flow with
-- conditions the ready steps' conditions are evaluated first (skipped steps can leave maps
-- without tasks, which the cascade completes).
CREATE FUNCTION pgflow.start_ready_steps(run_id uuid) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_flow text;
    v_slugs text[];
    v_counts integer[];
    v_delays integer[];
    v_events jsonb[];
    v_event jsonb;
BEGIN
    IF EXISTS (
        SELECT 1 FROM pgflow.runs r
        JOIN pgflow_kombu.step_conditions c ON c.flow_slug = r.flow_slug
        WHERE r.run_id = start_ready_steps.run_id
    ) THEN
        IF NOT pgflow_kombu.resolve_conditions(start_ready_steps.run_id) THEN
            RETURN;
        END IF;
        PERFORM pgflow.cascade_complete_taskless_steps(start_ready_steps.run_id);
    END IF;
    WITH started AS (
        UPDATE pgflow.step_states ss
        SET status = 'started', started_at = now(), remaining_tasks = ss.initial_tasks
        FROM pgflow.steps s
        WHERE ss.run_id = start_ready_steps.run_id
          AND ss.status = 'created' AND ss.remaining_deps = 0 AND ss.initial_tasks > 0
          AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
          AND NOT EXISTS (
              SELECT 1 FROM pgflow.runs r
              WHERE r.run_id = start_ready_steps.run_id AND r.status = 'failed'
          )
        RETURNING ss.flow_slug, ss.step_slug, ss.started_at, ss.remaining_tasks,
                  ss.remaining_deps, coalesce(s.opt_start_delay, 0) AS delay
    )
    SELECT min(flow_slug),
           array_agg(step_slug ORDER BY step_slug),
           array_agg(remaining_tasks ORDER BY step_slug),
           array_agg(delay ORDER BY step_slug),
           CASE WHEN v_rt THEN array_agg(
               jsonb_build_object(
                   'event_type', 'step:started',
                   'run_id', start_ready_steps.run_id,
                   'step_slug', step_slug,
                   'status', 'started',
                   'started_at', started_at,
                   'remaining_tasks', remaining_tasks,
                   'remaining_deps', remaining_deps
               ) ORDER BY step_slug) END
    INTO v_flow, v_slugs, v_counts, v_delays, v_events
    FROM started;

    IF v_flow IS NULL THEN
        RETURN;
    END IF;
    IF v_rt THEN
        FOREACH v_event IN ARRAY v_events LOOP
            PERFORM realtime.send(
                v_event,
                'step:' || (v_event->>'step_slug') || ':started',
                'pgflow:run:' || start_ready_steps.run_id,
                false
            );
        END LOOP;
    END IF;
    PERFORM pgflow_kombu.queue_step_tasks(v_flow, start_ready_steps.run_id, v_slugs, v_counts,
                                          v_delays);
END;
$$;

-- Completes the run when no step remains (output: see pgflow_kombu.run_output).
CREATE FUNCTION pgflow.maybe_complete_run(run_id uuid) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_run pgflow.runs;
BEGIN
    UPDATE pgflow.runs r
    SET status = 'completed',
        completed_at = now(),
        output = pgflow_kombu.run_output(r.run_id)
    WHERE r.run_id = maybe_complete_run.run_id
      AND r.remaining_steps = 0
      AND r.status = 'started'
    RETURNING * INTO v_run;

    IF FOUND AND to_regnamespace('realtime') IS NOT NULL
       AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL THEN
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'run:completed',
                'run_id', v_run.run_id,
                'flow_slug', v_run.flow_slug,
                'status', 'completed',
                'output', v_run.output,
                'completed_at', v_run.completed_at
            ),
            'run:completed',
            'pgflow:run:' || v_run.run_id,
            false
        );
    END IF;
END;
$$;

CREATE FUNCTION pgflow.start_flow(flow_slug text, input jsonb, run_id uuid DEFAULT NULL)
RETURNS SETOF pgflow.runs
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_steps integer;
    v_root_maps integer;
    v_conditions boolean;
    v_empty_map boolean := false;
    v_length integer;
    v_run pgflow.runs;
    v_slugs text[];
    v_counts integer[];
    v_delays integer[];
    v_started_at timestamptz;
    i integer;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE s.step_type = 'map' AND s.deps_count = 0),
           EXISTS (SELECT 1 FROM pgflow_kombu.step_conditions c
                   WHERE c.flow_slug = start_flow.flow_slug)
    INTO v_steps, v_root_maps, v_conditions
    FROM pgflow.steps s
    WHERE s.flow_slug = start_flow.flow_slug;

    -- Bad input fails as in pgflow 0.8.1: a root map's input is checked first, then the runs
    -- row's constraints (NULL input or flow_slug, a run_id taken, an unknown flow).
    IF v_root_maps > 0 THEN
        IF start_flow.input IS NULL THEN
            RAISE EXCEPTION 'Flow % has root map steps but input is NULL', start_flow.flow_slug;
        END IF;
        IF jsonb_typeof(start_flow.input) <> 'array' THEN
            RAISE EXCEPTION 'Flow % has root map steps but input is not an array (got %)',
                start_flow.flow_slug, jsonb_typeof(start_flow.input);
        END IF;
        v_length := jsonb_array_length(start_flow.input);
        v_empty_map := v_length = 0;
    END IF;

    INSERT INTO pgflow.runs (run_id, flow_slug, input, remaining_steps)
    VALUES (coalesce(start_flow.run_id, gen_random_uuid()), start_flow.flow_slug, start_flow.input,
            v_steps)
    RETURNING * INTO v_run;

    -- initial_tasks: 1 for a single step, the input's length for a root map, unknown (NULL) for a
    -- dependent map until its dependency completes. Unless some map has no task (the cascade
    -- must run first) or the flow has conditions (evaluated first), root steps are inserted
    -- already started: same rows, one write fewer.
    WITH created AS (
        INSERT INTO pgflow.step_states (
            flow_slug, run_id, step_slug, remaining_deps, initial_tasks,
            status, started_at, remaining_tasks
        )
        SELECT s.flow_slug, v_run.run_id, s.step_slug, s.deps_count, n.tasks,
               CASE WHEN n.starts THEN 'started' ELSE 'created' END,
               CASE WHEN n.starts THEN now() END,
               CASE WHEN n.starts THEN n.tasks END
        FROM pgflow.steps s
        CROSS JOIN LATERAL (
            SELECT CASE
                       WHEN s.step_type <> 'map' THEN 1
                       WHEN s.deps_count = 0 THEN v_length
                   END AS tasks,
                   s.deps_count = 0 AND NOT v_empty_map AND NOT v_conditions AS starts
        ) n
        WHERE s.flow_slug = start_flow.flow_slug
        RETURNING step_slug, status, remaining_tasks, started_at
    )
    SELECT array_agg(c.step_slug ORDER BY c.step_slug),
           array_agg(c.remaining_tasks ORDER BY c.step_slug),
           array_agg(coalesce(s.opt_start_delay, 0) ORDER BY c.step_slug),
           min(c.started_at)
    INTO v_slugs, v_counts, v_delays, v_started_at
    FROM created c
    JOIN pgflow.steps s ON s.flow_slug = start_flow.flow_slug AND s.step_slug = c.step_slug
    WHERE c.status = 'started';

    IF v_rt THEN
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'run:started',
                'run_id', v_run.run_id,
                'flow_slug', v_run.flow_slug,
                'input', v_run.input,
                'status', 'started',
                'remaining_steps', v_run.remaining_steps,
                'started_at', v_run.started_at
            ),
            'run:started',
            'pgflow:run:' || v_run.run_id,
            false
        );
    END IF;

    IF v_empty_map OR v_conditions THEN
        PERFORM pgflow.cascade_complete_taskless_steps(v_run.run_id);
        PERFORM pgflow.start_ready_steps(v_run.run_id);
        PERFORM pgflow.maybe_complete_run(v_run.run_id);
        RETURN QUERY SELECT * FROM pgflow.runs r WHERE r.run_id = v_run.run_id;
        RETURN;
    END IF;

    IF v_slugs IS NOT NULL THEN
        IF v_rt THEN
            FOR i IN 1 .. cardinality(v_slugs) LOOP
                PERFORM realtime.send(
                    jsonb_build_object(
                        'event_type', 'step:started',
                        'run_id', v_run.run_id,
                        'step_slug', v_slugs[i],
                        'status', 'started',
                        'started_at', v_started_at,
                        'remaining_tasks', v_counts[i],
                        'remaining_deps', 0
                    ),
                    'step:' || v_slugs[i] || ':started',
                    'pgflow:run:' || v_run.run_id,
                    false
                );
            END LOOP;
        END IF;
        PERFORM pgflow_kombu.queue_step_tasks(v_run.flow_slug, v_run.run_id, v_slugs, v_counts,
                                              v_delays);
    END IF;

    IF v_steps = 0 THEN
        PERFORM pgflow.maybe_complete_run(v_run.run_id);
        RETURN QUERY SELECT * FROM pgflow.runs r WHERE r.run_id = v_run.run_id;
    ELSE
        RETURN NEXT v_run;
    END IF;
END;
$$;

-- Claims the queued tasks behind the given messages for a worker and returns their inputs. Only
-- tasks this call moved from queued to started are returned. Message visibility is left as the
-- reader set it (as in pgflow 0.8.1); a worker extends it with set_vt_batch if it needs to.
-- Each message id is looked up on its own (a LATERAL subquery with LIMIT is planned per id, so
-- through the message-id index), its queued task locked (re-checked once locked), then updated
-- by tuple id: without statistics (a new database, autovacuum off), a plan for "message_id =
-- ANY (array)", or any statement that filters on status = 'queued', walks every entry of a
-- queued-task partial index instead, dead ones included, which grows with every task queued
-- since the last vacuum. The plan is generic: a custom one, made again on every call because
-- the array's length is unknown to the generic estimate, costs more than the claim itself.
CREATE FUNCTION pgflow.start_tasks(flow_slug text, msg_ids bigint[], worker_id uuid)
RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql SET search_path = '' SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH targets AS MATERIALIZED (
        SELECT q.tid
        FROM unnest(start_tasks.msg_ids) AS m(id)
        CROSS JOIN LATERAL (
            SELECT t.ctid AS tid
            FROM pgflow.step_tasks t
            WHERE t.message_id = m.id AND t.status = 'queued'
              AND t.flow_slug = start_tasks.flow_slug
            LIMIT 1
            FOR UPDATE
        ) q
    ),
    claimed AS (
        UPDATE pgflow.step_tasks t
        SET attempts_count = t.attempts_count + 1,
            status = 'started',
            started_at = now(),
            last_worker_id = start_tasks.worker_id
        FROM pgflow.runs r
        WHERE t.ctid = ANY (ARRAY(SELECT k.tid FROM targets k))
          AND r.run_id = t.run_id
          AND r.status <> 'failed'
        RETURNING t.run_id, t.step_slug, t.task_index, t.message_id, r.input
    )
    SELECT start_tasks.flow_slug,
           c.run_id,
           c.step_slug,
           CASE
               WHEN s.step_type = 'map' AND s.deps_count = 0 THEN
                   jsonb_array_element(c.input, c.task_index)
               WHEN s.step_type = 'map' THEN (
                   -- The element of the single dependency's output at this task's index; a map
                   -- dependency's output is its task outputs, so element i is task i's output.
                   SELECT CASE
                       WHEN p.step_type = 'map' THEN (
                           SELECT coalesce(pt.output, 'null'::jsonb)
                           FROM pgflow.step_tasks pt
                           WHERE pt.run_id = c.run_id AND pt.step_slug = d.dep_slug
                             AND pt.task_index = c.task_index AND pt.status = 'completed'
                       )
                       ELSE jsonb_array_element((
                           SELECT pt.output
                           FROM pgflow.step_tasks pt
                           WHERE pt.run_id = c.run_id AND pt.step_slug = d.dep_slug
                             AND pt.status = 'completed'
                           LIMIT 1
                       ), c.task_index)
                   END
                   FROM pgflow.deps d
                   JOIN pgflow.steps p ON p.flow_slug = d.flow_slug AND p.step_slug = d.dep_slug
                   WHERE d.flow_slug = start_tasks.flow_slug AND d.step_slug = c.step_slug
                   LIMIT 1
               )
               ELSE jsonb_build_object('run', c.input) || coalesce((
                   SELECT jsonb_object_agg(
                       d.dep_slug,
                       CASE WHEN p.step_type = 'map' THEN (
                           SELECT coalesce(jsonb_agg(pt.output ORDER BY pt.task_index), '[]'::jsonb)
                           FROM pgflow.step_tasks pt
                           WHERE pt.run_id = c.run_id AND pt.step_slug = d.dep_slug
                             AND pt.status = 'completed'
                       ) ELSE (
                           SELECT pt.output
                           FROM pgflow.step_tasks pt
                           WHERE pt.run_id = c.run_id AND pt.step_slug = d.dep_slug
                             AND pt.status = 'completed'
                           LIMIT 1
                       ) END
                   )
                   FROM pgflow.deps d
                   JOIN pgflow.steps p ON p.flow_slug = d.flow_slug AND p.step_slug = d.dep_slug
                   WHERE d.flow_slug = start_tasks.flow_slug AND d.step_slug = c.step_slug
                     -- A skipped dependency has no key (pgflow 0.14 leaves it out, not null).
                     AND NOT EXISTS (
                         SELECT 1 FROM pgflow_kombu.skipped_steps k
                         WHERE k.run_id = c.run_id AND k.step_slug = d.dep_slug)
               ), '{}'::jsonb)
           END,
           c.message_id,
           c.task_index
    FROM claimed c
    JOIN pgflow.steps s ON s.flow_slug = start_tasks.flow_slug AND s.step_slug = c.step_slug
    ORDER BY c.message_id;
END;
$$;

CREATE FUNCTION pgflow_kombu.complete_task_core(
    run_id uuid, step_slug text, task_index integer, output jsonb, archive boolean
) RETURNS SETOF pgflow.step_tasks
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_flow text;
    v_run_status text;
    v_map text;
    v_type text;
    v_error text;
    v_task pgflow.step_tasks;
    v_step_status text;
    v_step_type text;
    v_step_completed_at timestamptz;
    v_step_tasks integer;
    v_remaining integer;
    v_ready integer := 0;
    v_taskless integer := 0;
    v_output jsonb;
    v_run_output jsonb;
    v_run_completed_at timestamptz;
    v_child_tasks integer;
    v_start_here boolean;
    v_conditions boolean;
    v_slugs text[];
    v_counts integer[];
    v_delays integer[];
    v_started_at timestamptz;
    i integer;
BEGIN
    -- The run row lock serialises every change to one run.
    SELECT r.flow_slug, r.status INTO v_flow, v_run_status
    FROM pgflow.runs r
    WHERE r.run_id = complete_task_core.run_id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_run_status = 'failed' THEN
        RETURN QUERY
        SELECT * FROM pgflow.step_tasks t
        WHERE t.run_id = complete_task_core.run_id AND t.step_slug = complete_task_core.step_slug
          AND t.task_index = complete_task_core.task_index;
        RETURN;
    END IF;

    -- A single step feeding a map whose size is still unknown must produce an array. Checked
    -- before the task's status, as pgflow 0.8.1 does; failing this way is final (no retry).
    IF jsonb_typeof(complete_task_core.output) IS DISTINCT FROM 'array' THEN
        SELECT d.step_slug INTO v_map
        FROM pgflow.deps d
        JOIN pgflow.steps p ON p.flow_slug = d.flow_slug AND p.step_slug = d.dep_slug
        JOIN pgflow.steps c ON c.flow_slug = d.flow_slug AND c.step_slug = d.step_slug
        JOIN pgflow.step_states cs ON cs.run_id = complete_task_core.run_id AND cs.step_slug = d.step_slug
        WHERE d.flow_slug = v_flow AND d.dep_slug = complete_task_core.step_slug
          AND p.step_type = 'single' AND c.step_type = 'map' AND cs.initial_tasks IS NULL
        ORDER BY d.step_slug
        LIMIT 1;

        IF v_map IS NOT NULL THEN
            v_type := coalesce(jsonb_typeof(complete_task_core.output), 'null');
            v_error := '[TYPE_VIOLATION] Map step ' || v_map || ' expects array input but dependency '
                || complete_task_core.step_slug || ' produced ' || v_type;

            UPDATE pgflow.runs r SET status = 'failed', failed_at = now()
            WHERE r.run_id = complete_task_core.run_id;
            IF v_rt THEN
                PERFORM realtime.send(
                    jsonb_build_object(
                        'event_type', 'run:failed',
                        'run_id', complete_task_core.run_id,
                        'flow_slug', v_flow,
                        'status', 'failed',
                        'failed_at', now()
                    ),
                    'run:failed',
                    'pgflow:run:' || complete_task_core.run_id,
                    false
                );
            END IF;
            PERFORM pgflow_kombu.queue_archive(v_flow, ids)
            FROM (
                SELECT array_agg(t.message_id) AS ids
                FROM pgflow.step_tasks t
                WHERE t.run_id = complete_task_core.run_id AND t.status IN ('queued', 'started')
                  AND t.message_id IS NOT NULL
            ) m
            WHERE ids IS NOT NULL;

            UPDATE pgflow.step_tasks t
            SET status = 'failed',
                failed_at = now(),
                output = complete_task_core.output,
                error_message = '[TYPE_VIOLATION] Produced ' || v_type || ' instead of array'
            WHERE t.run_id = complete_task_core.run_id AND t.step_slug = complete_task_core.step_slug
              AND t.task_index = complete_task_core.task_index;
            UPDATE pgflow.step_states ss
            SET status = 'failed', failed_at = now(), error_message = v_error
            WHERE ss.run_id = complete_task_core.run_id AND ss.step_slug = complete_task_core.step_slug;
            IF v_rt THEN
                PERFORM realtime.send(
                    jsonb_build_object(
                        'event_type', 'step:failed',
                        'run_id', complete_task_core.run_id,
                        'step_slug', complete_task_core.step_slug,
                        'status', 'failed',
                        'error_message', v_error,
                        'failed_at', now()
                    ),
                    'step:' || complete_task_core.step_slug || ':failed',
                    'pgflow:run:' || complete_task_core.run_id,
                    false
                );
            END IF;
            RETURN;
        END IF;
    END IF;

    -- Deliberate difference: 0.8.1 keeps the error_message of an earlier failed attempt on the
    -- completed task; a completed task carries none here.
    UPDATE pgflow.step_tasks t
    SET status = 'completed', completed_at = now(), output = complete_task_core.output,
        error_message = NULL
    WHERE t.run_id = complete_task_core.run_id AND t.step_slug = complete_task_core.step_slug
      AND t.task_index = complete_task_core.task_index AND t.status = 'started'
    RETURNING t.* INTO v_task;
    IF NOT FOUND THEN
        -- Not started (queued, or already completed or failed): nothing to do. pgflow 0.8.1
        -- re-broadcasts step:completed for a repeated completion; we ignore repeats.
        RETURN QUERY
        SELECT * FROM pgflow.step_tasks t
        WHERE t.run_id = complete_task_core.run_id AND t.step_slug = complete_task_core.step_slug
          AND t.task_index = complete_task_core.task_index;
        RETURN;
    END IF;

    UPDATE pgflow.step_states ss
    SET remaining_tasks = ss.remaining_tasks - 1,
        status = CASE WHEN ss.remaining_tasks = 1 THEN 'completed' ELSE 'started' END,
        completed_at = CASE WHEN ss.remaining_tasks = 1 THEN now() END
    FROM pgflow.steps s
    WHERE ss.run_id = complete_task_core.run_id AND ss.step_slug = complete_task_core.step_slug
      AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
    RETURNING ss.status, ss.completed_at, ss.initial_tasks, s.step_type,
              ss.status = 'completed' AND EXISTS (
                  SELECT 1 FROM pgflow_kombu.step_conditions c WHERE c.flow_slug = ss.flow_slug)
    INTO v_step_status, v_step_completed_at, v_step_tasks, v_step_type, v_conditions;

    IF v_step_status = 'completed' THEN
        -- A dependent map learns its task count from this step: a map parent's task count, or
        -- the length of a single parent's array.
        IF v_step_type = 'map' THEN
            v_child_tasks := v_step_tasks;
        ELSIF jsonb_typeof(complete_task_core.output) = 'array' THEN
            v_child_tasks := jsonb_array_length(complete_task_core.output);
        END IF;
        -- Only an empty array from a single step can leave a dependent map without tasks (for
        -- the cascade). Otherwise dependents that become ready start in the same write that
        -- counts their dependency done (one row version and one statement fewer per step).
        -- In a flow with conditions they start in start_ready_steps, which evaluates them first.
        v_start_here := v_child_tasks IS DISTINCT FROM 0 AND NOT v_conditions;

        -- Each dependent loses one pending dependency (and starts when it was the last; its task
        -- count is known, or it is a map waiting for this step, its only dependency); the run
        -- loses one remaining step, and completes in the same write when it was the last.
        WITH dependents AS (
            UPDATE pgflow.step_states cs
            SET remaining_deps = cs.remaining_deps - 1,
                initial_tasks = coalesce(cs.initial_tasks, v_child_tasks),
                status = CASE
                    WHEN v_start_here AND cs.remaining_deps = 1
                         AND coalesce(cs.initial_tasks, v_child_tasks) > 0
                    THEN 'started' ELSE cs.status END,
                started_at = CASE
                    WHEN v_start_here AND cs.remaining_deps = 1
                         AND coalesce(cs.initial_tasks, v_child_tasks) > 0
                    THEN now() ELSE cs.started_at END,
                remaining_tasks = CASE
                    WHEN v_start_here AND cs.remaining_deps = 1
                         AND coalesce(cs.initial_tasks, v_child_tasks) > 0
                    THEN coalesce(cs.initial_tasks, v_child_tasks) ELSE cs.remaining_tasks END
            FROM pgflow.deps d
            JOIN pgflow.steps c ON c.flow_slug = d.flow_slug AND c.step_slug = d.step_slug
            WHERE d.flow_slug = v_flow AND d.dep_slug = complete_task_core.step_slug
              AND cs.run_id = complete_task_core.run_id AND cs.step_slug = d.step_slug
            RETURNING cs.step_slug, cs.status, cs.started_at, cs.remaining_tasks,
                      cs.remaining_deps, cs.initial_tasks, coalesce(c.opt_start_delay, 0) AS delay
        ),
        run AS (
            UPDATE pgflow.runs r
            SET remaining_steps = r.remaining_steps - 1,
                status = CASE WHEN r.remaining_steps = 1 THEN 'completed' ELSE r.status END,
                completed_at = CASE WHEN r.remaining_steps = 1 THEN now() END,
                output = CASE WHEN r.remaining_steps = 1 THEN pgflow_kombu.run_output(r.run_id) END
            WHERE r.run_id = complete_task_core.run_id
            RETURNING r.remaining_steps, r.status, r.output, r.completed_at
        ),
        summary AS (
            SELECT count(*) FILTER (
                       WHERE k.remaining_deps = 0 AND k.initial_tasks > 0 AND k.status = 'created'
                   ) AS ready,
                   count(*) FILTER (WHERE k.remaining_deps = 0 AND k.initial_tasks = 0) AS taskless,
                   array_agg(k.step_slug ORDER BY k.step_slug)
                       FILTER (WHERE k.status = 'started') AS slugs,
                   array_agg(k.remaining_tasks ORDER BY k.step_slug)
                       FILTER (WHERE k.status = 'started') AS counts,
                   array_agg(k.delay ORDER BY k.step_slug)
                       FILTER (WHERE k.status = 'started') AS delays,
                   min(k.started_at) AS started_at
            FROM dependents k
        )
        SELECT run.remaining_steps, run.status, run.output, run.completed_at, summary.ready,
               summary.taskless, summary.slugs, summary.counts, summary.delays, summary.started_at
        INTO v_remaining, v_run_status, v_run_output, v_run_completed_at, v_ready, v_taskless,
             v_slugs, v_counts, v_delays, v_started_at
        FROM run, summary;

        IF v_rt THEN
            IF v_step_type = 'map' THEN
                SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
                INTO v_output
                FROM pgflow.step_tasks t
                WHERE t.run_id = complete_task_core.run_id AND t.step_slug = complete_task_core.step_slug
                  AND t.status = 'completed';
            ELSE
                v_output := complete_task_core.output;
            END IF;
            PERFORM realtime.send(
                jsonb_build_object(
                    'event_type', 'step:completed',
                    'run_id', complete_task_core.run_id,
                    'step_slug', complete_task_core.step_slug,
                    'status', 'completed',
                    'output', v_output,
                    'completed_at', v_step_completed_at
                ),
                'step:' || complete_task_core.step_slug || ':completed',
                'pgflow:run:' || complete_task_core.run_id,
                false
            );
        END IF;

        IF v_taskless > 0 THEN
            v_remaining := v_remaining - pgflow.cascade_complete_taskless_steps(complete_task_core.run_id);
            v_ready := 1;
        END IF;
    END IF;

    IF complete_task_core.archive AND v_task.message_id IS NOT NULL THEN
        PERFORM pgflow_kombu.queue_archive(v_flow, ARRAY[v_task.message_id]);
    END IF;
    IF v_slugs IS NOT NULL THEN
        -- Dependents started above: their events and messages, in step_slug order.
        IF v_rt THEN
            FOR i IN 1 .. cardinality(v_slugs) LOOP
                PERFORM realtime.send(
                    jsonb_build_object(
                        'event_type', 'step:started',
                        'run_id', complete_task_core.run_id,
                        'step_slug', v_slugs[i],
                        'status', 'started',
                        'started_at', v_started_at,
                        'remaining_tasks', v_counts[i],
                        'remaining_deps', 0
                    ),
                    'step:' || v_slugs[i] || ':started',
                    'pgflow:run:' || complete_task_core.run_id,
                    false
                );
            END LOOP;
        END IF;
        PERFORM pgflow_kombu.queue_step_tasks(v_flow, complete_task_core.run_id, v_slugs, v_counts,
                                              v_delays);
    END IF;
    IF v_ready > 0 THEN
        PERFORM pgflow.start_ready_steps(complete_task_core.run_id);
    END IF;
    IF v_run_status = 'completed' THEN
        IF v_rt THEN
            PERFORM realtime.send(
                jsonb_build_object(
                    'event_type', 'run:completed',
                    'run_id', complete_task_core.run_id,
                    'flow_slug', v_flow,
                    'status', 'completed',
                    'output', v_run_output,
                    'completed_at', v_run_completed_at
                ),
                'run:completed',
                'pgflow:run:' || complete_task_core.run_id,
                false
            );
        END IF;
    ELSIF v_remaining = 0 OR v_conditions THEN
        -- Taskless steps completed by the cascade, or skipped steps, were the last ones.
        PERFORM pgflow.maybe_complete_run(complete_task_core.run_id);
    END IF;
    RETURN NEXT v_task;
END;
$$;

-- pgflow's complete_task. Its body is pgflow_kombu.complete_task_core, which can leave the
-- task's message for the caller to archive: pgflow_kombu.report_tasks archives the messages of a
-- whole batch with one statement per queue (pgmq's archive is a dynamic statement, parsed and
-- planned on every call).
CREATE FUNCTION pgflow.complete_task(run_id uuid, step_slug text, task_index integer, output jsonb)
RETURNS SETOF pgflow.step_tasks
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    RETURN QUERY SELECT * FROM pgflow_kombu.complete_task_core(
        complete_task.run_id, complete_task.step_slug, complete_task.task_index,
        complete_task.output, true);
END;
$$;

CREATE FUNCTION pgflow.fail_task(run_id uuid, step_slug text, task_index integer, error_message text)
RETURNS SETOF pgflow.step_tasks
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_flow text;
    v_run_status text;
    v_max_attempts integer;
    v_base_delay integer;
    v_task pgflow.step_tasks;
    v_rt boolean;
    v_when_exhausted text;
BEGIN
    SELECT r.flow_slug, r.status,
           coalesce(s.opt_max_attempts, f.opt_max_attempts),
           coalesce(s.opt_base_delay, f.opt_base_delay)
    INTO v_flow, v_run_status, v_max_attempts, v_base_delay
    FROM pgflow.runs r
    JOIN pgflow.flows f ON f.flow_slug = r.flow_slug
    LEFT JOIN pgflow.steps s ON s.flow_slug = r.flow_slug AND s.step_slug = fail_task.step_slug
    WHERE r.run_id = fail_task.run_id
    FOR NO KEY UPDATE OF r;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    IF v_run_status = 'failed' THEN
        -- No retries on a failed run: a running task fails, its message is archived either way.
        UPDATE pgflow.step_tasks t
        SET status = 'failed', failed_at = now(), error_message = fail_task.error_message
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index AND t.status = 'started';
        SELECT * INTO v_task FROM pgflow.step_tasks t
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        IF FOUND THEN
            IF v_task.message_id IS NOT NULL THEN
                PERFORM pgflow_kombu.queue_archive(v_flow, ARRAY[v_task.message_id]);
            END IF;
            RETURN NEXT v_task;
        END IF;
        RETURN;
    END IF;

    UPDATE pgflow.step_tasks t
    SET status = CASE WHEN t.attempts_count < v_max_attempts THEN 'queued' ELSE 'failed' END,
        failed_at = CASE WHEN t.attempts_count < v_max_attempts THEN NULL ELSE now() END,
        started_at = CASE WHEN t.attempts_count < v_max_attempts THEN NULL ELSE t.started_at END,
        error_message = fail_task.error_message
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index AND t.status = 'started'
    RETURNING t.* INTO v_task;

    IF NOT FOUND THEN
        -- Task not started. pgflow 0.8.1 still applies the backoff to a queued task's message.
        SELECT * INTO v_task FROM pgflow.step_tasks t
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF v_task.status = 'queued' AND v_task.message_id IS NOT NULL THEN
            PERFORM pgflow_kombu.queue_set_vt(v_flow, ARRAY[v_task.message_id],
                ARRAY[pgflow.calculate_retry_delay(v_base_delay, v_task.attempts_count)]);
        END IF;
        RETURN NEXT v_task;
        RETURN;
    END IF;

    IF v_task.status = 'queued' THEN
        -- Retry: the same message becomes visible again after the backoff.
        IF v_task.message_id IS NOT NULL THEN
            PERFORM pgflow_kombu.queue_set_vt(v_flow, ARRAY[v_task.message_id],
                ARRAY[pgflow.calculate_retry_delay(v_base_delay, v_task.attempts_count)]);
        END IF;
        RETURN NEXT v_task;
        RETURN;
    END IF;

    -- Out of attempts. A step whose when_exhausted says so is skipped instead (0070_conditions).
    SELECT c.when_exhausted INTO v_when_exhausted
    FROM pgflow_kombu.step_conditions c
    WHERE c.flow_slug = v_flow AND c.step_slug = fail_task.step_slug;
    IF v_when_exhausted IN ('skip', 'skip-cascade') THEN
        PERFORM pgflow_kombu.skip_exhausted(fail_task.run_id, v_flow, fail_task.step_slug,
                                            v_when_exhausted, fail_task.error_message,
                                            v_task.message_id);
        RETURN NEXT v_task;
        RETURN;
    END IF;

    -- Out of attempts: the step and the run fail; every message of the run is archived.
    UPDATE pgflow.step_states ss
    SET status = 'failed', failed_at = now(), error_message = fail_task.error_message
    WHERE ss.run_id = fail_task.run_id AND ss.step_slug = fail_task.step_slug;
    UPDATE pgflow.runs r SET status = 'failed', failed_at = now()
    WHERE r.run_id = fail_task.run_id;

    v_rt := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    IF v_rt THEN
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'step:failed',
                'run_id', fail_task.run_id,
                'step_slug', fail_task.step_slug,
                'status', 'failed',
                'error_message', fail_task.error_message,
                'failed_at', now()
            ),
            'step:' || fail_task.step_slug || ':failed',
            'pgflow:run:' || fail_task.run_id,
            false
        );
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'run:failed',
                'run_id', fail_task.run_id,
                'flow_slug', v_flow,
                'status', 'failed',
                'error_message', fail_task.error_message,
                'failed_at', now()
            ),
            'run:failed',
            'pgflow:run:' || fail_task.run_id,
            false
        );
    END IF;

    PERFORM pgflow_kombu.queue_archive(v_flow, ids)
    FROM (
        SELECT array_agg(t.message_id) AS ids
        FROM pgflow.step_tasks t
        WHERE t.run_id = fail_task.run_id AND t.message_id IS NOT NULL
          AND (t.status IN ('queued', 'started')
               OR (t.step_slug = fail_task.step_slug AND t.task_index = fail_task.task_index))
    ) m
    WHERE ids IS NOT NULL;

    RETURN NEXT v_task;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- Helpers for clients and workers
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgflow.get_run_with_states(run_id uuid) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    SELECT jsonb_build_object(
        'run', to_jsonb(r),
        'steps', coalesce((
            SELECT jsonb_agg(to_jsonb(ss) ORDER BY s.step_index)
            FROM pgflow.step_states ss
            JOIN pgflow.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = r.run_id
        ), '[]'::jsonb)
    )
    FROM pgflow.runs r
    WHERE r.run_id = get_run_with_states.run_id
$$;

CREATE FUNCTION pgflow.start_flow_with_states(flow_slug text, input jsonb, run_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    v_run_id uuid;
BEGIN
    SELECT r.run_id INTO v_run_id
    FROM pgflow.start_flow(start_flow_with_states.flow_slug, start_flow_with_states.input,
                           start_flow_with_states.run_id) r;
    RETURN pgflow.get_run_with_states(v_run_id);
END;
$$;

-- Sets each message's visibility to now + its offset (seconds), in one statement. The checks are
-- 0.8.1's, errors included: the queue name is checked (pgmq.format_table_name) even when there is
-- nothing to do; lengths compare as array_length, NULL for an empty array (so two empty arrays
-- still need the queue to exist, and a length shows as <NULL>).
CREATE FUNCTION pgflow.set_vt_batch(queue_name text, msg_ids bigint[], vt_offsets integer[])
RETURNS TABLE (
    msg_id bigint,
    read_ct integer,
    enqueued_at timestamptz,
    vt timestamptz,
    message jsonb,
    headers jsonb
)
LANGUAGE plpgsql SET search_path = '' AS $$
DECLARE
    v_table text := pgmq.format_table_name(queue_name, 'q');
BEGIN
    IF msg_ids IS NULL OR vt_offsets IS NULL THEN
        RETURN;
    END IF;
    IF array_length(msg_ids, 1) IS DISTINCT FROM array_length(vt_offsets, 1) THEN
        RAISE EXCEPTION 'msg_ids length (%) must equal vt_offsets length (%)',
            array_length(msg_ids, 1), array_length(vt_offsets, 1);
    END IF;
    RETURN QUERY EXECUTE format(
        'UPDATE pgmq.%I q
         SET vt = clock_timestamp() + make_interval(secs => i.vt_offset)
         FROM unnest($1, $2) AS i(msg_id, vt_offset)
         WHERE q.msg_id = i.msg_id
         RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message, q.headers',
        v_table
    ) USING msg_ids, vt_offsets;
END;
$$;

-- Superseded by pgmq.read_with_poll + start_tasks; kept so old callers get an empty result.
CREATE FUNCTION pgflow.poll_for_tasks(
    queue_name text,
    vt integer,
    qty integer,
    max_poll_seconds integer DEFAULT 5,
    poll_interval_ms integer DEFAULT 100
) RETURNS SETOF pgflow.step_task_record
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    RAISE NOTICE 'DEPRECATED: poll_for_tasks is deprecated and will be removed. Please update pgflow via "npx pgflow install".';
    RETURN;
END;
$$;
