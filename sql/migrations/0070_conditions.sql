-- Conditional steps, modelled on pgflow 0.14 (`if` / `ifNot` / `whenUnmet` / `whenExhausted`), on a
-- database that stays pgflow 0.8.1's.
--
-- A step may carry a condition: `if_pattern` must be contained (jsonb @>) in the step's condition
-- document and `if_not_pattern` must not be. The document is the single-step input of 0.8.1,
-- `{"run": <run input>, "<dep>": <dep output>, ...}`, over the dependencies that completed
-- (a skipped one is absent), for map steps too (one decision per step, not per element). A
-- condition is evaluated once, when the step becomes ready (its dependencies are done). Unmet:
--   skip          the step is skipped; its dependents run without its key (a dependent map
--                 over it gets no task and outputs []);
--   skip-cascade  the step and every step downstream of it are skipped;
--   fail          the step fails with 'Condition not met', and the run with it.
-- `when_exhausted` says what a task's last failed attempt does: fail (pgflow's behaviour), skip or
-- skip-cascade (as above, reason 'handler_failed'; the failed task keeps its error).
--
-- Representation. pgflow 0.8.1's step_states.status knows created/started/completed/failed, and a
-- TypeScript 0.8.1 worker or client reads these rows and events: it must never meet 'skipped'. So
-- a skipped step's pgflow row reads as a completed step without output (remaining_tasks 0, no
-- completed task; its step:<slug>:completed event has output null), and pgflow_kombu.skipped_steps
-- says that it was skipped and why. pgflow's functions on our schema read that table where 0.14
-- treats 'skipped' specially: start_tasks leaves a skipped dependency's key out of the input (0.14
-- gives the key absent, not null), the run output leaves out a skipped leaf (NULL when every leaf
-- was skipped), and tasks of a skipped step still queued or running are failed ('Step skipped')
-- with their messages archived, so no worker starts or completes them later.
--
-- The hooks sit in our pgflow functions (0001): start_flow, start_ready_steps and the empty-map
-- cascade evaluate conditions of ready steps; fail_task applies when_exhausted. A flow without a
-- row in step_conditions never calls any of this (an index probe per start_flow and per
-- completed task decides; start_tasks and the run output probe skipped_steps). An
-- upstream-installed pgflow schema runs upstream's functions, which
-- know nothing of these tables: set_step_condition refuses to record a condition there.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

CREATE TABLE IF NOT EXISTS pgflow_kombu.step_conditions (
    flow_slug text NOT NULL,
    step_slug text NOT NULL,
    if_pattern jsonb,
    if_not_pattern jsonb,
    when_unmet text NOT NULL DEFAULT 'skip',
    when_exhausted text NOT NULL DEFAULT 'fail',
    CONSTRAINT step_conditions_pkey PRIMARY KEY (flow_slug, step_slug),
    CONSTRAINT step_conditions_step_fkey FOREIGN KEY (flow_slug, step_slug)
        REFERENCES pgflow.steps (flow_slug, step_slug) ON DELETE CASCADE,
    CONSTRAINT if_pattern_is_object
        CHECK (if_pattern IS NULL OR jsonb_typeof(if_pattern) = 'object'),
    CONSTRAINT if_not_pattern_is_object
        CHECK (if_not_pattern IS NULL OR jsonb_typeof(if_not_pattern) = 'object'),
    CONSTRAINT when_unmet_is_valid CHECK (when_unmet IN ('skip', 'skip-cascade', 'fail')),
    CONSTRAINT when_exhausted_is_valid CHECK (when_exhausted IN ('fail', 'skip', 'skip-cascade'))
);

CREATE TABLE IF NOT EXISTS pgflow_kombu.skipped_steps (
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    skip_reason text NOT NULL,
    error_message text,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT skipped_steps_pkey PRIMARY KEY (run_id, step_slug),
    CONSTRAINT skipped_steps_step_state_fkey FOREIGN KEY (run_id, step_slug)
        REFERENCES pgflow.step_states (run_id, step_slug) ON DELETE CASCADE,
    CONSTRAINT skip_reason_is_valid
        CHECK (skip_reason IN ('condition_unmet', 'dependency_skipped', 'handler_failed'))
);

-- Whether pgflow's functions here are ours (they evaluate conditions), not an upstream install.
CREATE OR REPLACE FUNCTION pgflow_kombu.conditions_supported() RETURNS boolean
LANGUAGE sql STABLE SET search_path = '' AS $$
    SELECT to_regprocedure(
        'pgflow_kombu.complete_task_core(uuid,text,integer,jsonb,boolean)') IS NOT NULL
$$;

-- Records a step's condition when its flow is compiled (after pgflow.add_step).
CREATE OR REPLACE FUNCTION pgflow_kombu.set_step_condition(
    flow_slug text,
    step_slug text,
    if_pattern jsonb DEFAULT NULL,
    if_not_pattern jsonb DEFAULT NULL,
    when_unmet text DEFAULT 'skip',
    when_exhausted text DEFAULT 'fail'
) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    IF NOT pgflow_kombu.conditions_supported() THEN
        RAISE EXCEPTION 'step %.% has a condition, but this database''s pgflow functions were '
            'installed by pgflow''s own tools (0.8.1), which cannot evaluate conditions; '
            'install the pgflow schema with pgflow-kombu (pgflow-kombu db upgrade on a new '
            'database) or remove the condition', set_step_condition.flow_slug,
            set_step_condition.step_slug
            USING ERRCODE = 'feature_not_supported';
    END IF;
    INSERT INTO pgflow_kombu.step_conditions AS c (
        flow_slug, step_slug, if_pattern, if_not_pattern, when_unmet, when_exhausted)
    VALUES (set_step_condition.flow_slug, set_step_condition.step_slug,
            set_step_condition.if_pattern, set_step_condition.if_not_pattern,
            coalesce(set_step_condition.when_unmet, 'skip'),
            coalesce(set_step_condition.when_exhausted, 'fail'))
    ON CONFLICT ON CONSTRAINT step_conditions_pkey DO NOTHING;
END;
$$;

-- The document a step's condition is matched against: {"run": <run input>} plus the output of
-- each completed, not skipped dependency (a map's is the array of its task outputs).
CREATE OR REPLACE FUNCTION pgflow_kombu.condition_document(
    run_id uuid, flow_slug text, step_slug text, run_input jsonb
) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = '' AS $$
BEGIN
    RETURN jsonb_build_object('run', condition_document.run_input) || coalesce((
        SELECT jsonb_object_agg(
            d.dep_slug,
            CASE WHEN p.step_type = 'map' THEN (
                SELECT coalesce(jsonb_agg(t.output ORDER BY t.task_index), '[]'::jsonb)
                FROM pgflow.step_tasks t
                WHERE t.run_id = condition_document.run_id AND t.step_slug = d.dep_slug
                  AND t.status = 'completed'
            ) ELSE (
                SELECT t.output
                FROM pgflow.step_tasks t
                WHERE t.run_id = condition_document.run_id AND t.step_slug = d.dep_slug
                  AND t.status = 'completed'
                LIMIT 1
            ) END)
        FROM pgflow.deps d
        JOIN pgflow.steps p ON p.flow_slug = d.flow_slug AND p.step_slug = d.dep_slug
        JOIN pgflow.step_states ds
            ON ds.run_id = condition_document.run_id AND ds.step_slug = d.dep_slug
        WHERE d.flow_slug = condition_document.flow_slug
          AND d.step_slug = condition_document.step_slug
          AND ds.status = 'completed'
          AND NOT EXISTS (
              SELECT 1 FROM pgflow_kombu.skipped_steps k
              WHERE k.run_id = condition_document.run_id AND k.step_slug = d.dep_slug)
    ), '{}'::jsonb);
END;
$$;

-- Marks steps of a run skipped (each with its reason): pgflow's row reads completed without
-- output, skipped_steps records it, tasks still queued or running fail with their messages
-- archived, the run has one remaining step fewer per step, and each gets step:<slug>:completed
-- (output null) in step_index order. Steps already finished are left alone. Dependents are the
-- caller's business. Returns the slugs marked.
CREATE OR REPLACE FUNCTION pgflow_kombu.mark_skipped(
    run_id uuid, step_slugs text[], reasons text[], error_message text
) RETURNS text[]
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_rt boolean := to_regnamespace('realtime') IS NOT NULL
        AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL;
    v_flow text;
    v_slugs text[];
    v_events jsonb;
    v_event jsonb;
    v_messages bigint[];
BEGIN
    WITH target AS (
        SELECT t.slug, t.reason FROM unnest(mark_skipped.step_slugs, mark_skipped.reasons) AS t(slug, reason)
    ),
    skipped AS (
        UPDATE pgflow.step_states ss
        SET status = 'completed',
            started_at = coalesce(ss.started_at, now()),
            completed_at = now(),
            remaining_tasks = 0,
            remaining_deps = 0,
            initial_tasks = coalesce(ss.initial_tasks, 0)
        FROM target t
        WHERE ss.run_id = mark_skipped.run_id AND ss.step_slug = t.slug
          AND ss.status IN ('created', 'started')
        RETURNING ss.flow_slug, ss.step_slug, ss.started_at, ss.completed_at, t.reason
    ),
    recorded AS (
        INSERT INTO pgflow_kombu.skipped_steps (run_id, step_slug, skip_reason, error_message,
                                                skipped_at)
        SELECT mark_skipped.run_id, k.step_slug, k.reason, mark_skipped.error_message,
               k.completed_at
        FROM skipped k
    ),
    run AS (
        UPDATE pgflow.runs r
        SET remaining_steps = r.remaining_steps - (SELECT count(*) FROM skipped)
        WHERE r.run_id = mark_skipped.run_id AND EXISTS (SELECT 1 FROM skipped)
    )
    SELECT min(k.flow_slug),
           array_agg(k.step_slug ORDER BY s.step_index),
           jsonb_agg(jsonb_build_object(
               'event_type', 'step:completed',
               'run_id', mark_skipped.run_id,
               'step_slug', k.step_slug,
               'status', 'completed',
               'output', NULL,
               'started_at', k.started_at,
               'completed_at', k.completed_at,
               'remaining_tasks', 0,
               'remaining_deps', 0
           ) ORDER BY s.step_index)
    INTO v_flow, v_slugs, v_events
    FROM skipped k
    JOIN pgflow.steps s ON s.flow_slug = k.flow_slug AND s.step_slug = k.step_slug;

    IF v_slugs IS NULL THEN
        RETURN '{}';
    END IF;

    WITH stopped AS (
        UPDATE pgflow.step_tasks t
        SET status = 'failed', failed_at = now(), error_message = 'Step skipped'
        WHERE t.run_id = mark_skipped.run_id AND t.step_slug = ANY (v_slugs)
          AND t.status IN ('queued', 'started')
        RETURNING t.message_id
    )
    SELECT array_agg(message_id) INTO v_messages FROM stopped WHERE message_id IS NOT NULL;
    IF v_messages IS NOT NULL THEN
        PERFORM pgflow_kombu.queue_archive(v_flow, v_messages);
    END IF;

    IF v_rt THEN
        FOR v_event IN SELECT e FROM jsonb_array_elements(v_events) e LOOP
            PERFORM realtime.send(
                v_event,
                'step:' || (v_event->>'step_slug') || ':completed',
                'pgflow:run:' || mark_skipped.run_id,
                false
            );
        END LOOP;
    END IF;
    RETURN v_slugs;
END;
$$;

-- Plain skip: the steps are skipped and each dependent has one dependency fewer per skipped
-- parent; a dependent map (its only dependency skipped) gets no task.
CREATE OR REPLACE FUNCTION pgflow_kombu.skip_steps(
    run_id uuid, step_slugs text[], reason text, error_message text
) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_slugs text[];
BEGIN
    v_slugs := pgflow_kombu.mark_skipped(
        skip_steps.run_id, skip_steps.step_slugs,
        array_fill(skip_steps.reason, ARRAY[cardinality(skip_steps.step_slugs)]),
        skip_steps.error_message);
    IF cardinality(v_slugs) = 0 THEN
        RETURN;
    END IF;
    UPDATE pgflow.step_states cs
    SET remaining_deps = cs.remaining_deps - k.n,
        initial_tasks = CASE WHEN c.step_type = 'map' THEN 0 ELSE cs.initial_tasks END
    FROM (
        SELECT d.flow_slug, d.step_slug, count(*)::integer AS n
        FROM pgflow.runs r
        JOIN pgflow.deps d ON d.flow_slug = r.flow_slug
        WHERE r.run_id = skip_steps.run_id AND d.dep_slug = ANY (v_slugs)
        GROUP BY d.flow_slug, d.step_slug
    ) k
    JOIN pgflow.steps c ON c.flow_slug = k.flow_slug AND c.step_slug = k.step_slug
    WHERE cs.run_id = skip_steps.run_id AND cs.step_slug = k.step_slug AND cs.status = 'created';
END;
$$;

-- Skip-cascade: the step (with the given reason) and every step downstream of it
-- ('dependency_skipped') are skipped.
CREATE OR REPLACE FUNCTION pgflow_kombu.skip_cascade(
    run_id uuid, step_slug text, reason text, error_message text
) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_slugs text[];
    v_reasons text[];
BEGIN
    WITH RECURSIVE downstream(step_slug) AS (
        SELECT skip_cascade.step_slug
        UNION
        SELECT d.step_slug
        FROM downstream x
        JOIN pgflow.runs r ON r.run_id = skip_cascade.run_id
        JOIN pgflow.deps d ON d.flow_slug = r.flow_slug AND d.dep_slug = x.step_slug
    )
    SELECT array_agg(step_slug ORDER BY step_slug),
           array_agg(CASE WHEN step_slug = skip_cascade.step_slug THEN skip_cascade.reason
                          ELSE 'dependency_skipped' END ORDER BY step_slug)
    INTO v_slugs, v_reasons
    FROM downstream;
    PERFORM pgflow_kombu.mark_skipped(skip_cascade.run_id, v_slugs, v_reasons,
                                      skip_cascade.error_message);
END;
$$;

-- An unmet condition with when_unmet 'fail': the step and the run fail ('Condition not met'),
-- step:failed then run:failed, and the run's queued or running messages are archived.
CREATE OR REPLACE FUNCTION pgflow_kombu.fail_unmet(run_id uuid, flow_slug text, step_slug text)
RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_error constant text := 'Condition not met';
BEGIN
    UPDATE pgflow.step_states ss
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE ss.run_id = fail_unmet.run_id AND ss.step_slug = fail_unmet.step_slug;
    UPDATE pgflow.runs r SET status = 'failed', failed_at = now()
    WHERE r.run_id = fail_unmet.run_id;
    IF to_regnamespace('realtime') IS NOT NULL
       AND to_regprocedure('realtime.send(jsonb,text,text,boolean)') IS NOT NULL THEN
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'step:failed',
                'run_id', fail_unmet.run_id,
                'step_slug', fail_unmet.step_slug,
                'status', 'failed',
                'error_message', v_error,
                'failed_at', now()
            ),
            'step:' || fail_unmet.step_slug || ':failed',
            'pgflow:run:' || fail_unmet.run_id,
            false
        );
        PERFORM realtime.send(
            jsonb_build_object(
                'event_type', 'run:failed',
                'run_id', fail_unmet.run_id,
                'flow_slug', fail_unmet.flow_slug,
                'status', 'failed',
                'error_message', v_error,
                'failed_at', now()
            ),
            'run:failed',
            'pgflow:run:' || fail_unmet.run_id,
            false
        );
    END IF;
    PERFORM pgflow_kombu.queue_archive(fail_unmet.flow_slug, ids)
    FROM (
        SELECT array_agg(t.message_id) AS ids
        FROM pgflow.step_tasks t
        WHERE t.run_id = fail_unmet.run_id AND t.status IN ('queued', 'started')
          AND t.message_id IS NOT NULL
    ) m
    WHERE ids IS NOT NULL;
END;
$$;

-- Evaluates the conditions of the run's ready steps (created, no dependency left), wave by wave
-- until nothing changes: as in pgflow 0.14, an unmet 'fail' (the first in step_index order)
-- fails the run before anything is skipped; then unmet 'skip' steps are skipped together, then
-- 'skip-cascade' ones with their downstream steps; plain skips can make more steps ready, so
-- the next wave looks again. Steps whose condition holds stay ready for start_ready_steps.
-- Returns false when the run failed (here or before).
CREATE OR REPLACE FUNCTION pgflow_kombu.resolve_conditions(run_id uuid) RETURNS boolean
LANGUAGE plpgsql SET search_path = '' AS $$
#variable_conflict use_column
DECLARE
    v_flow text;
    v_status text;
    v_input jsonb;
    v_step record;
    v_doc jsonb;
    v_fail text;
    v_skip text[];
    v_cascade text[];
    v_slug text;
    v_waves integer := 0;
BEGIN
    SELECT r.flow_slug, r.status, r.input INTO v_flow, v_status, v_input
    FROM pgflow.runs r WHERE r.run_id = resolve_conditions.run_id;
    IF v_status IS DISTINCT FROM 'started' THEN
        RETURN v_status IS DISTINCT FROM 'failed';
    END IF;
    LOOP
        v_waves := v_waves + 1;
        IF v_waves > 1000 THEN
            RAISE EXCEPTION 'resolve_conditions exceeded % waves', v_waves - 1;
        END IF;
        v_fail := NULL;
        v_skip := '{}';
        v_cascade := '{}';
        FOR v_step IN
            SELECT ss.step_slug, c.if_pattern, c.if_not_pattern, c.when_unmet
            FROM pgflow.step_states ss
            JOIN pgflow_kombu.step_conditions c
                ON c.flow_slug = ss.flow_slug AND c.step_slug = ss.step_slug
            JOIN pgflow.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = resolve_conditions.run_id
              AND ss.status = 'created' AND ss.remaining_deps = 0
              AND (c.if_pattern IS NOT NULL OR c.if_not_pattern IS NOT NULL)
            ORDER BY s.step_index
        LOOP
            v_doc := pgflow_kombu.condition_document(
                resolve_conditions.run_id, v_flow, v_step.step_slug, v_input);
            CONTINUE WHEN (v_step.if_pattern IS NULL OR v_doc @> v_step.if_pattern)
                      AND (v_step.if_not_pattern IS NULL OR NOT v_doc @> v_step.if_not_pattern);
            IF v_step.when_unmet = 'fail' THEN
                v_fail := v_step.step_slug;
                EXIT;
            ELSIF v_step.when_unmet = 'skip' THEN
                v_skip := v_skip || v_step.step_slug;
            ELSE
                v_cascade := v_cascade || v_step.step_slug;
            END IF;
        END LOOP;

        IF v_fail IS NOT NULL THEN
            PERFORM pgflow_kombu.fail_unmet(resolve_conditions.run_id, v_flow, v_fail);
            RETURN false;
        END IF;
        IF cardinality(v_skip) > 0 THEN
            PERFORM pgflow_kombu.skip_steps(resolve_conditions.run_id, v_skip, 'condition_unmet',
                                            NULL);
        END IF;
        FOREACH v_slug IN ARRAY v_cascade LOOP
            PERFORM pgflow_kombu.skip_cascade(resolve_conditions.run_id, v_slug,
                                              'condition_unmet', NULL);
        END LOOP;
        EXIT WHEN cardinality(v_skip) = 0;
    END LOOP;
    RETURN true;
END;
$$;

-- A task's last attempt failed on a step whose when_exhausted is skip or skip-cascade (called by
-- fail_task, which has failed the task): the step is skipped instead of failing the run, the
-- task's message archived, and the run moves on (ready steps evaluated and started, the run
-- completed when nothing remains).
CREATE OR REPLACE FUNCTION pgflow_kombu.skip_exhausted(
    run_id uuid, flow_slug text, step_slug text, mode text, error_message text,
    message_id bigint
) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    IF skip_exhausted.message_id IS NOT NULL THEN
        PERFORM pgflow_kombu.queue_archive(skip_exhausted.flow_slug,
                                           ARRAY[skip_exhausted.message_id]);
    END IF;
    IF skip_exhausted.mode = 'skip-cascade' THEN
        PERFORM pgflow_kombu.skip_cascade(skip_exhausted.run_id, skip_exhausted.step_slug,
                                          'handler_failed', skip_exhausted.error_message);
    ELSE
        PERFORM pgflow_kombu.skip_steps(skip_exhausted.run_id, ARRAY[skip_exhausted.step_slug],
                                        'handler_failed', skip_exhausted.error_message);
    END IF;
    PERFORM pgflow.start_ready_steps(skip_exhausted.run_id);
    PERFORM pgflow.maybe_complete_run(skip_exhausted.run_id);
END;
$$;
