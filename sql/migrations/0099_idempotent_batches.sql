-- Deduplicated batches (schema pgflow_kombu): many runs started with idempotency keys in one
-- statement. 0050_schedules.sql reserves one key per start (reserve_idempotency_key); these
-- reserve a batch's keys as one set, then start the runs of the new keys together through
-- start_flows (0090_set_based.sql). The keys' table and meaning are 0050's: a key already used
-- for the flow gives the run it started, and starts nothing.

-- Reserve keys[i] for a run of flow_slug, for every i: as reserve_idempotency_key called once
-- per key in order would. Returns (ordinal, key_run_id, created) per element, in order: a new
-- key gets a new run id (created), a key already used its run's (not created), a key repeated in
-- the batch the run of its first occurrence (not created); a NULL key reserves nothing (NULL,
-- NULL). Keys are inserted in sorted order, so batches sharing keys wait on each other in one
-- order (no deadlock); a key held by an open transaction makes this wait until it commits (its
-- run is returned) or rolls back (the key is taken here). Expired keys are replaced.
CREATE OR REPLACE FUNCTION pgflow_kombu.reserve_idempotency_keys(
    flow_slug text,
    keys text[],
    ttl_seconds double precision DEFAULT NULL
) RETURNS TABLE (ordinal integer, key_run_id uuid, created boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_empty bigint;
    v_pending text[];
    v_new_keys text[] := '{}';
    v_new_runs uuid[] := '{}';
    v_old_keys text[] := '{}';
    v_old_runs uuid[] := '{}';
    v_got_keys text[];
    v_got_runs uuid[];
    v_expired text[];
BEGIN
    SELECT x.ord INTO v_empty
    FROM unnest(reserve_idempotency_keys.keys) WITH ORDINALITY AS x(key, ord)
    WHERE x.key = ''
    ORDER BY x.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'an idempotency key must be a non-empty string (key #% is empty)',
            v_empty - 1 USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_pending := ARRAY(
        SELECT DISTINCT x.key FROM unnest(reserve_idempotency_keys.keys) AS x(key)
        WHERE x.key IS NOT NULL ORDER BY 1);
    WHILE cardinality(v_pending) > 0 LOOP
        WITH inserted AS (
            INSERT INTO pgflow_kombu.idempotency_keys AS k (flow_slug, key, run_id, expires_at)
            SELECT reserve_idempotency_keys.flow_slug, p.key, gen_random_uuid(),
                   now() + make_interval(secs => reserve_idempotency_keys.ttl_seconds)
            FROM unnest(v_pending) AS p(key)
            ORDER BY p.key
            ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING
            RETURNING k.key, k.run_id
        )
        SELECT coalesce(array_agg(i.key), '{}'), coalesce(array_agg(i.run_id), '{}')
        INTO v_got_keys, v_got_runs
        FROM inserted AS i;
        v_new_keys := v_new_keys || v_got_keys;
        v_new_runs := v_new_runs || v_got_runs;
        v_pending := ARRAY(SELECT p.key FROM unnest(v_pending) AS p(key)
                           WHERE p.key <> ALL (v_got_keys) ORDER BY 1);
        EXIT WHEN cardinality(v_pending) = 0;

        -- Taken by committed starts (ON CONFLICT waited for open ones to finish). A live key
        -- gives its run; an expired one is deleted and tried again, as is one deleted meanwhile
        -- (its run was removed).
        SELECT coalesce(array_agg(h.key) FILTER (WHERE h.live), '{}'),
               coalesce(array_agg(h.run_id) FILTER (WHERE h.live), '{}'),
               coalesce(array_agg(h.key) FILTER (WHERE NOT h.live), '{}')
        INTO v_got_keys, v_got_runs, v_expired
        FROM (
            SELECT k.key, k.run_id, (k.expires_at IS NULL OR k.expires_at > now()) AS live
            FROM pgflow_kombu.idempotency_keys AS k
            WHERE k.flow_slug = reserve_idempotency_keys.flow_slug AND k.key = ANY (v_pending)
            ORDER BY k.key
            FOR UPDATE
        ) AS h;
        IF cardinality(v_expired) > 0 THEN
            DELETE FROM pgflow_kombu.idempotency_keys AS k
            WHERE k.flow_slug = reserve_idempotency_keys.flow_slug AND k.key = ANY (v_expired);
        END IF;
        v_old_keys := v_old_keys || v_got_keys;
        v_old_runs := v_old_runs || v_got_runs;
        v_pending := ARRAY(SELECT p.key FROM unnest(v_pending) AS p(key)
                           WHERE p.key <> ALL (v_got_keys) ORDER BY 1);
    END LOOP;

    RETURN QUERY
    SELECT x.ord::integer,
           coalesce(n.run_id, o.run_id),
           CASE WHEN x.key IS NOT NULL
                THEN n.run_id IS NOT NULL AND x.ord = min(x.ord) OVER (PARTITION BY x.key) END
    FROM unnest(reserve_idempotency_keys.keys) WITH ORDINALITY AS x(key, ord)
    LEFT JOIN unnest(v_new_keys, v_new_runs) AS n(key, run_id) ON n.key = x.key
    LEFT JOIN unnest(v_old_keys, v_old_runs) AS o(key, run_id) ON o.key = x.key
    ORDER BY x.ord;
END;
$$;

-- Starts one run of flow_slug per element of inputs whose idempotency_keys element is NULL or a
-- new key, as start_flows does (the other arguments are start_flows'), and none for a key
-- already used or repeated in the batch. Returns (ordinal, run_id, created) per input, in
-- order: the run started for it (created), or the one its key started before (not created).
-- Bad input fails as start_flows fails, and starts and reserves nothing.
CREATE OR REPLACE FUNCTION pgflow_kombu.start_flows_idempotent(
    flow_slug text,
    inputs jsonb[],
    idempotency_keys text[],
    ttl_seconds double precision DEFAULT NULL,
    delay_seconds integer DEFAULT 0,
    priority integer DEFAULT NULL,
    keys jsonb[] DEFAULT NULL,
    traceparent text DEFAULT NULL,
    tracestate text DEFAULT NULL
) RETURNS TABLE (ordinal integer, run_id uuid, created boolean)
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_ids uuid[];
    v_new boolean[];
    v_start integer[];
BEGIN
    IF coalesce(cardinality(start_flows_idempotent.idempotency_keys), 0)
       <> coalesce(cardinality(start_flows_idempotent.inputs), 0) THEN
        RAISE EXCEPTION 'idempotency_keys has % elements but inputs has %',
            coalesce(cardinality(start_flows_idempotent.idempotency_keys), 0),
            coalesce(cardinality(start_flows_idempotent.inputs), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF start_flows_idempotent.keys IS NOT NULL
       AND cardinality(start_flows_idempotent.keys) <> cardinality(start_flows_idempotent.inputs)
    THEN
        RAISE EXCEPTION 'keys has % elements but inputs has %',
            cardinality(start_flows_idempotent.keys), cardinality(start_flows_idempotent.inputs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(start_flows_idempotent.inputs), 0) = 0 THEN
        RETURN;
    END IF;

    SELECT array_agg(r.key_run_id ORDER BY r.ordinal),
           array_agg(r.created IS DISTINCT FROM false ORDER BY r.ordinal)
    INTO v_ids, v_new
    FROM pgflow_kombu.reserve_idempotency_keys(
        start_flows_idempotent.flow_slug, start_flows_idempotent.idempotency_keys,
        start_flows_idempotent.ttl_seconds) AS r;
    -- The inputs to start, in input order; each new key's run takes the id it reserved.
    v_start := ARRAY(SELECT x.ord FROM unnest(v_new) WITH ORDINALITY AS x(new, ord)
                     WHERE x.new ORDER BY x.ord);

    RETURN QUERY
    WITH started AS (
        SELECT v_start[s.ordinal] AS ord, s.run_id
        FROM pgflow_kombu.start_flows(
            flow_slug => start_flows_idempotent.flow_slug,
            inputs => ARRAY(SELECT start_flows_idempotent.inputs[o]
                            FROM unnest(v_start) WITH ORDINALITY AS u(o, n) ORDER BY u.n),
            run_ids => ARRAY(SELECT v_ids[o]
                             FROM unnest(v_start) WITH ORDINALITY AS u(o, n) ORDER BY u.n),
            delay_seconds => start_flows_idempotent.delay_seconds,
            priority => start_flows_idempotent.priority,
            keys => CASE WHEN start_flows_idempotent.keys IS NOT NULL THEN
                        ARRAY(SELECT start_flows_idempotent.keys[o]
                              FROM unnest(v_start) WITH ORDINALITY AS u(o, n) ORDER BY u.n)
                    END,
            traceparent => start_flows_idempotent.traceparent,
            tracestate => start_flows_idempotent.tracestate
        ) AS s
    )
    SELECT x.ord::integer, coalesce(s.run_id, x.run_id), s.run_id IS NOT NULL
    FROM unnest(v_ids) WITH ORDINALITY AS x(run_id, ord)
    LEFT JOIN started AS s ON s.ord = x.ord
    ORDER BY x.ord;
END;
$$;
