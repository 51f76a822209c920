-- Flow control of pgflow-kombu (schema pgflow_kombu): concurrency limits, rate limits and
-- priorities applied when our workers claim tasks, and final failures without retries.
--
-- Nothing here changes pgflow's tables or functions. The limits are checked by
-- pgflow_kombu.claim_tasks (our workers' claim path) in the claiming transaction; a pgflow
-- TypeScript worker calls pgflow.start_tasks directly and ignores them (its running tasks still
-- count against the limits our workers apply, since a slot is a 'started' task row).

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- The limits of a flow (step_slug '') or of one of its steps, as the code declares them; written
-- when the flow is compiled by our client and when a worker serving it starts.
--   max_concurrency: at most that many tasks of the scope 'started' at once (per key if keyed);
--   rate_count / rate_period: a token bucket of rate_count tokens refilled over rate_period
--     seconds (per key if keyed); each claimed task takes one token;
--   keyed: the limits apply per key: the key a run stored when it started (run_controls.keys),
--     else the run input's field key_field, else '' (one shared group);
--   priority: the flow's default run priority (flow row only); prioritized: some run or the flow
--     uses priorities, so claims look for higher-priority work waiting (flow row only).
CREATE TABLE IF NOT EXISTS pgflow_kombu.flow_limits (
    flow_slug text NOT NULL,
    step_slug text NOT NULL DEFAULT '',
    max_concurrency integer CHECK (max_concurrency > 0),
    rate_count integer CHECK (rate_count > 0),
    rate_period double precision CHECK (rate_period > 0),
    keyed boolean NOT NULL DEFAULT false,
    key_field text,
    priority integer,
    prioritized boolean NOT NULL DEFAULT false,
    PRIMARY KEY (flow_slug, step_slug),
    CHECK ((rate_count IS NULL) = (rate_period IS NULL))
);

-- What a run of our client carries beyond pgflow's run row: its priority and the concurrency
-- keys its limits computed from the run input ({"": flow key, "<step>": step key}).
CREATE TABLE IF NOT EXISTS pgflow_kombu.run_controls (
    run_id uuid PRIMARY KEY,
    flow_slug text NOT NULL,
    priority integer,
    keys jsonb NOT NULL DEFAULT '{}'
);

-- Token buckets of the rate limits, one per scope and key.
CREATE TABLE IF NOT EXISTS pgflow_kombu.rate_buckets (
    flow_slug text NOT NULL,
    step_slug text NOT NULL,
    key text NOT NULL,
    tokens double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    PRIMARY KEY (flow_slug, step_slug, key)
);

-- A task of a claim, as admit_tasks weighs it.
CREATE TYPE pgflow_kombu.admission AS (msg_id bigint, priority integer, scopes text[]);

-- Replace the declared limits of a flow. limits is {"<step or ''>": {"max_concurrency",
-- "rate_count", "rate_period", "keyed", "key_field", "priority"}}; an absent scope has none.
-- Whether the flow's runs used priorities is kept.
CREATE OR REPLACE FUNCTION pgflow_kombu.set_flow_limits(flow_slug text, limits jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    seen boolean;
BEGIN
    -- One writer at a time per flow (the lock compiling a flow takes; held already when called
    -- from there): every process that compiles or serves the flow writes its limits.
    PERFORM pg_advisory_xact_lock(hashtext('pgflow_kombu.flow'), hashtext(set_flow_limits.flow_slug));
    SELECT l.prioritized INTO seen FROM pgflow_kombu.flow_limits AS l
    WHERE l.flow_slug = set_flow_limits.flow_slug AND l.step_slug = '';
    DELETE FROM pgflow_kombu.flow_limits AS l WHERE l.flow_slug = set_flow_limits.flow_slug;
    INSERT INTO pgflow_kombu.flow_limits AS l
        (flow_slug, step_slug, max_concurrency, rate_count, rate_period, keyed, key_field,
         priority, prioritized)
    SELECT set_flow_limits.flow_slug, e.key, (e.value ->> 'max_concurrency')::integer,
           (e.value ->> 'rate_count')::integer, (e.value ->> 'rate_period')::float8,
           coalesce((e.value ->> 'keyed')::boolean, false), e.value ->> 'key_field',
           (e.value ->> 'priority')::integer,
           e.key = '' AND (coalesce(seen, false) OR e.value ->> 'priority' IS NOT NULL)
    FROM jsonb_each(coalesce(limits, '{}')) AS e;
    IF coalesce(seen, false) AND NOT (coalesce(limits, '{}') ? '') THEN
        INSERT INTO pgflow_kombu.flow_limits (flow_slug, step_slug, prioritized)
        VALUES (set_flow_limits.flow_slug, '', true);
    END IF;
END;
$$;

-- Start a run (delayed or not) with its priority and concurrency keys, in one statement.
CREATE OR REPLACE FUNCTION pgflow_kombu.start_flow_controlled(
    flow_slug text,
    input jsonb,
    run_id uuid DEFAULT NULL,
    delay_seconds integer DEFAULT 0,
    priority integer DEFAULT NULL,
    keys jsonb DEFAULT '{}'
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    new_run_id uuid;
BEGIN
    new_run_id := pgflow_kombu.start_flow_delayed(
        flow_slug => start_flow_controlled.flow_slug, input => start_flow_controlled.input,
        run_id => start_flow_controlled.run_id,
        delay_seconds => start_flow_controlled.delay_seconds);
    INSERT INTO pgflow_kombu.run_controls (run_id, flow_slug, priority, keys)
    VALUES (new_run_id, start_flow_controlled.flow_slug, start_flow_controlled.priority,
            coalesce(start_flow_controlled.keys, '{}'));
    -- Claims of this flow now look for higher-priority work (the row is written once).
    IF priority IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pgflow_kombu.flow_limits AS l
        WHERE l.flow_slug = start_flow_controlled.flow_slug AND l.step_slug = ''
          AND l.prioritized) THEN
        INSERT INTO pgflow_kombu.flow_limits AS l (flow_slug, step_slug, prioritized)
        VALUES (start_flow_controlled.flow_slug, '', true)
        ON CONFLICT ON CONSTRAINT flow_limits_pkey DO UPDATE SET prioritized = true;
    END IF;
    RETURN new_run_id;
END;
$$;

-- Which of the messages of a claim may start now. Called by claim_tasks (in its transaction)
-- for a flow that has limits. Returns the msg_ids admitted; the others with a queued task are
-- deferred: their messages become visible again after a short delay (1 s, or until the rate
-- limit has a token), the task stays queued and no attempt is counted. Messages without a
-- queued task are neither (start_tasks ignores them, as before).
--   priority: when the flow uses priorities, a task whose run priority is below the highest one
--     waiting among the flow's oldest 1000 messages visible now or within 2 s (a task deferred
--     a moment ago still waits) is deferred; within a claim, higher priorities go first.
--   concurrency: the tasks 'started' in the scope (and key) are counted under transaction-level
--     advisory locks of the scopes, taken in one global order, so concurrent claims of a scope
--     are serialised and each sees the others' committed claims. A slot is a started task row:
--     a completion, a failure, or recovery of a crashed worker's task frees it.
--   rate: the scope's bucket row is locked (FOR UPDATE, same order), refilled by the time
--     elapsed, and debited by the tasks admitted.
CREATE OR REPLACE FUNCTION pgflow_kombu.admit_tasks(flow_slug text, msg_ids bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    flow_row pgflow_kombu.flow_limits;
    lim pgflow_kombu.flow_limits;
    sid text;
    scope_step text;
    scope_key text;
    bucket pgflow_kombu.rate_buckets;
    rate float8;
    budget jsonb := '{}';  -- scope -> free running slots
    purse jsonb := '{}';   -- scope -> tokens available
    top integer;
    ok boolean;
    wait integer;
    admitted bigint[] := '{}';
    deferred_ids bigint[] := '{}';
    deferred_by integer[] := '{}';
    cands pgflow_kombu.admission[];
    c pgflow_kombu.admission;
BEGIN
    SELECT * INTO flow_row FROM pgflow_kombu.flow_limits AS l
    WHERE l.flow_slug = admit_tasks.flow_slug AND l.step_slug = '';

    -- The queued tasks behind the messages, each with its priority and the limit scopes it falls
    -- in ('<step or empty>/<key>').
    SELECT coalesce(array_agg(ROW(x.msg_id, x.priority, x.scopes)::pgflow_kombu.admission
                              ORDER BY x.priority DESC, x.msg_id), '{}')
    INTO cands
    FROM (
        SELECT t.message_id AS msg_id,
               coalesce(rc.priority, flow_row.priority, 0) AS priority,
               ARRAY(
                   SELECT l.step_slug || '/' || CASE WHEN l.keyed THEN
                              coalesce(rc.keys ->> l.step_slug, r.input ->> l.key_field, '')
                          ELSE '' END
                   FROM pgflow_kombu.flow_limits AS l
                   WHERE l.flow_slug = admit_tasks.flow_slug
                     AND l.step_slug IN ('', t.step_slug)
                     AND (l.max_concurrency IS NOT NULL OR l.rate_count IS NOT NULL)
               ) AS scopes
        FROM unnest(admit_tasks.msg_ids) AS m(id)
        JOIN pgflow.step_tasks AS t
          ON t.message_id = m.id AND t.flow_slug = admit_tasks.flow_slug AND t.status = 'queued'
        JOIN pgflow.runs AS r ON r.run_id = t.run_id
        LEFT JOIN pgflow_kombu.run_controls AS rc ON rc.run_id = t.run_id
    ) AS x;
    IF cardinality(cands) = 0 THEN
        RETURN admitted;
    END IF;

    IF flow_row.prioritized THEN
        EXECUTE format(
            'SELECT max(coalesce(rc.priority, $2, 0)) '
            'FROM (SELECT q.msg_id FROM pgmq.%I AS q '
            '      WHERE q.vt <= clock_timestamp() + interval ''2 seconds'' '
            '      ORDER BY q.msg_id LIMIT 1000) AS q '
            'JOIN pgflow.step_tasks AS t ON t.message_id = q.msg_id AND t.flow_slug = $1 '
            '     AND t.status = ''queued'' '
            'LEFT JOIN pgflow_kombu.run_controls AS rc ON rc.run_id = t.run_id',
            'q_' || lower(admit_tasks.flow_slug))
        INTO top USING admit_tasks.flow_slug, flow_row.priority;
    END IF;

    -- Lock and read every scope the claim touches, in one order (no deadlock between claims).
    FOR sid IN
        SELECT DISTINCT s FROM unnest(cands) AS x, unnest(x.scopes) AS s ORDER BY 1
    LOOP
        scope_step := split_part(sid, '/', 1);
        scope_key := substr(sid, length(scope_step) + 2);
        SELECT * INTO lim FROM pgflow_kombu.flow_limits AS l
        WHERE l.flow_slug = admit_tasks.flow_slug AND l.step_slug = scope_step;
        IF lim.max_concurrency IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(hashtext('pgflow_kombu.limit'),
                                          hashtext(admit_tasks.flow_slug || '/' || sid));
            budget := jsonb_set(budget, ARRAY[sid], to_jsonb(lim.max_concurrency));
        END IF;
        IF lim.rate_count IS NOT NULL THEN
            INSERT INTO pgflow_kombu.rate_buckets AS b (flow_slug, step_slug, key, tokens,
                                                       refilled_at)
            VALUES (admit_tasks.flow_slug, scope_step, scope_key, lim.rate_count,
                    clock_timestamp())
            ON CONFLICT (flow_slug, step_slug, key) DO NOTHING;
            SELECT * INTO bucket FROM pgflow_kombu.rate_buckets AS b
            WHERE b.flow_slug = admit_tasks.flow_slug AND b.step_slug = scope_step
              AND b.key = scope_key
            FOR UPDATE;
            rate := lim.rate_count / lim.rate_period;
            purse := jsonb_set(purse, ARRAY[sid], to_jsonb(least(
                lim.rate_count::float8,
                bucket.tokens + greatest(0, extract(epoch FROM clock_timestamp()
                                                          - bucket.refilled_at)) * rate)));
        END IF;
    END LOOP;

    -- The running tasks of every locked scope, in one pass over the flow's started tasks (a
    -- statement after the locks: it sees every claim committed before them).
    IF budget <> '{}' THEN
        SELECT budget || coalesce(jsonb_object_agg(n.sid, (budget ->> n.sid)::integer - n.running),
                                  '{}')
        INTO budget
        FROM (
            SELECT x.sid, count(*)::integer AS running
            FROM pgflow.step_tasks AS t
            JOIN pgflow.runs AS r ON r.run_id = t.run_id
            LEFT JOIN pgflow_kombu.run_controls AS rc ON rc.run_id = t.run_id
            CROSS JOIN LATERAL (
                SELECT l.step_slug || '/' || CASE WHEN l.keyed THEN
                           coalesce(rc.keys ->> l.step_slug, r.input ->> l.key_field, '')
                       ELSE '' END AS sid
                FROM pgflow_kombu.flow_limits AS l
                WHERE l.flow_slug = admit_tasks.flow_slug AND l.step_slug IN ('', t.step_slug)
                  AND l.max_concurrency IS NOT NULL
            ) AS x
            WHERE t.flow_slug = admit_tasks.flow_slug AND t.status = 'started'
              AND budget ? x.sid
            GROUP BY x.sid
        ) AS n;
    END IF;

    FOREACH c IN ARRAY cands LOOP
        ok := top IS NULL OR c.priority >= top;
        wait := 1;
        IF ok THEN
            FOREACH sid IN ARRAY c.scopes LOOP
                IF (budget ->> sid)::integer < 1 THEN
                    ok := false;
                END IF;
                IF (purse ->> sid)::float8 < 1 THEN
                    ok := false;
                    scope_step := split_part(sid, '/', 1);
                    SELECT * INTO lim FROM pgflow_kombu.flow_limits AS l
                    WHERE l.flow_slug = admit_tasks.flow_slug AND l.step_slug = scope_step;
                    wait := greatest(wait, ceil((1 - (purse ->> sid)::float8)
                                                * lim.rate_period / lim.rate_count)::integer);
                END IF;
            END LOOP;
        END IF;
        IF ok THEN
            admitted := admitted || c.msg_id;
            FOREACH sid IN ARRAY c.scopes LOOP
                IF budget ? sid THEN
                    budget := jsonb_set(budget, ARRAY[sid],
                                        to_jsonb((budget ->> sid)::integer - 1));
                END IF;
                IF purse ? sid THEN
                    purse := jsonb_set(purse, ARRAY[sid],
                                        to_jsonb((purse ->> sid)::float8 - 1));
                END IF;
            END LOOP;
        ELSE
            deferred_ids := deferred_ids || c.msg_id;
            deferred_by := deferred_by || wait;
        END IF;
    END LOOP;

    FOR sid IN SELECT k FROM jsonb_object_keys(purse) AS k LOOP
        scope_step := split_part(sid, '/', 1);
        UPDATE pgflow_kombu.rate_buckets AS b
        SET tokens = (purse ->> sid)::float8, refilled_at = clock_timestamp()
        WHERE b.flow_slug = admit_tasks.flow_slug AND b.step_slug = scope_step
          AND b.key = substr(sid, length(scope_step) + 2);
    END LOOP;
    IF cardinality(deferred_ids) > 0 THEN
        PERFORM pgflow_kombu.queue_set_vt(admit_tasks.flow_slug, deferred_ids, deferred_by);
    END IF;
    RETURN admitted;
END;
$$;

-- Fail an attempt for good (pgflow_kombu.Reject, an input that fails validation): what
-- pgflow.fail_task does on a task's last attempt (the step and the run fail, with the same
-- events and archived messages), whatever attempts remain. fail_task retries while
-- attempts_count < max_attempts, so the count is raised for the call and put back after it:
-- the task keeps the number of attempts it really made.
CREATE OR REPLACE FUNCTION pgflow_kombu.reject_task(
    run_id uuid, step_slug text, task_index integer, error_message text
) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    made integer;
BEGIN
    PERFORM 1 FROM pgflow.runs AS r WHERE r.run_id = reject_task.run_id FOR NO KEY UPDATE;
    UPDATE pgflow.step_tasks AS t
    SET attempts_count = greatest(t.attempts_count, coalesce(s.opt_max_attempts,
                                                             f.opt_max_attempts))
    FROM pgflow.steps AS s, pgflow.flows AS f, pgflow.step_tasks AS old
    WHERE t.run_id = reject_task.run_id AND t.step_slug = reject_task.step_slug
      AND t.task_index = reject_task.task_index AND t.status = 'started'
      AND s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug
      AND f.flow_slug = t.flow_slug
      AND old.run_id = t.run_id AND old.step_slug = t.step_slug
      AND old.task_index = t.task_index
    RETURNING old.attempts_count INTO made;
    PERFORM pgflow.fail_task(run_id => reject_task.run_id, step_slug => reject_task.step_slug,
                             task_index => reject_task.task_index,
                             error_message => reject_task.error_message);
    IF made IS NOT NULL THEN
        UPDATE pgflow.step_tasks AS t SET attempts_count = made
        WHERE t.run_id = reject_task.run_id AND t.step_slug = reject_task.step_slug
          AND t.task_index = reject_task.task_index;
    END IF;
END;
$$;
