-- Rate buckets that do not grow forever (schema pgflow_kombu; 0060_limits.sql defines them).
--
-- A keyed rate limit keeps one bucket row per key it has seen (e.g. per customer). A bucket
-- idle long enough to be full again carries no information: admit_tasks treats a missing
-- bucket as a full one. prune_rate_buckets deletes those (and buckets of scopes that no longer
-- have a rate limit); pruning (`pgflow-kombu runs prune`, a worker's retention) calls it.
-- admit_tasks is redefined to create-or-lock its buckets in one statement, so that a bucket
-- deleted by a concurrent prune is recreated full instead of skipped.

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
            -- Create-or-lock in one statement: a bucket pruned meanwhile is inserted anew
            -- (full), never read as missing (INSERT .. DO NOTHING then SELECT .. FOR UPDATE
            -- could find the row deleted between the two, and the debit would be lost).
            INSERT INTO pgflow_kombu.rate_buckets AS b (flow_slug, step_slug, key, tokens,
                                                       refilled_at)
            VALUES (admit_tasks.flow_slug, scope_step, scope_key, lim.rate_count,
                    clock_timestamp())
            ON CONFLICT (flow_slug, step_slug, key) DO UPDATE SET tokens = b.tokens
            RETURNING b.* INTO bucket;
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


-- Delete up to batch_size buckets that are full again (their tokens refilled to rate_count by
-- now) or whose scope has no rate limit any more; returns how many. A bucket an admission holds
-- is skipped (SKIP LOCKED), and the condition is checked on the locked row, so a bucket debited
-- meanwhile is kept.
CREATE OR REPLACE FUNCTION pgflow_kombu.prune_rate_buckets(batch_size integer)
RETURNS integer
LANGUAGE sql
SET search_path = ''
AS $$
    WITH idle AS (
        SELECT b.flow_slug, b.step_slug, b.key
        FROM pgflow_kombu.rate_buckets AS b
        LEFT JOIN pgflow_kombu.flow_limits AS l
          ON l.flow_slug = b.flow_slug AND l.step_slug = b.step_slug
        WHERE l.rate_count IS NULL
           OR b.refilled_at + make_interval(
                  secs => greatest(0, l.rate_count - b.tokens) * l.rate_period / l.rate_count)
              <= clock_timestamp()
        LIMIT prune_rate_buckets.batch_size
        FOR UPDATE OF b SKIP LOCKED
    ), gone AS (
        DELETE FROM pgflow_kombu.rate_buckets AS b
        USING idle
        WHERE b.flow_slug = idle.flow_slug AND b.step_slug = idle.step_slug
          AND b.key = idle.key
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;
