-- Read and claim in one round trip (schema pgflow_kombu): the worker's default claim path.
--
-- pgflow_kombu.read_and_claim reads up to qty visible messages of the served flow queues and
-- claims their tasks in the same transaction, with every effect of a read followed by
-- pgflow_kombu.claim_tasks (0030_worker.sql): each message read is hidden for read_visibility
-- seconds and its read_ct counted, as pgmq.read does; the tasks are started by
-- pgflow.start_tasks (attempts_count, started_at, last_worker_id) after flow control admitted
-- them (limits, rate limits, priorities: 0060_limits.sql), and the messages of steps whose
-- timeout outlasts read_visibility are hidden for that timeout + 2 s. Messages without a queued
-- task (another worker holds it, its run failed) stay read and hidden, as after a read.
--
-- Queues are read in the order given (the caller rotates it for fairness), each once, with what
-- is left of qty after the tasks claimed from the queues before it: at most qty tasks are
-- claimed. Messages are taken in the order of the kombu transport's reads (0010_transport.sql):
-- the time they became visible, then msg_id (pgmq.read takes msg_id order), on the queue's
-- delivery-order index that pgflow_kombu.ensure_queue makes, so a read never wades through the
-- messages other workers hold.
--
-- The read of a queue is pgflow_kombu.queue_read(queue, qty, visibility) -> bigint[] (the ids
-- read, in order), generated like the statements of 0003_queue_statements.sql: one static
-- statement per flow queue, planned once per session (planned on every call, as a dynamic
-- statement, the read cost more than it took to run), reached through a binary search on the
-- queue name, with a dynamic statement for a queue it does not know yet. The plan is the generic
-- one, shaped so that it does not depend on qty (the ids taken go to the update as an array,
-- which the primary key finds whatever their number). It is generated again
-- at the commit of every transaction that creates a flow, and by refresh_queue_reads().

CREATE OR REPLACE FUNCTION pgflow_kombu.queue_read_statement(p_table text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
BEGIN
    IF p_table IS NOT NULL THEN
        RETURN format(
            'WITH taken AS (UPDATE pgmq.%1$s AS q '
            'SET vt = clock_timestamp() + make_interval(secs => queue_read.visibility), '
            'read_ct = q.read_ct + 1 '
            'WHERE q.msg_id = ANY(ARRAY('
            'SELECT p.msg_id FROM pgmq.%1$s AS p WHERE p.vt <= now() '
            'ORDER BY pgflow_kombu.message_priority(p.message) DESC, p.vt, p.msg_id '
            'LIMIT queue_read.qty FOR UPDATE SKIP LOCKED)) '
            'RETURNING q.msg_id) '
            'SELECT array_agg(taken.msg_id ORDER BY taken.msg_id) INTO ids FROM taken; '
            'RETURN ids;',
            p_table);
    END IF;
    RETURN 'EXECUTE format(''WITH picked AS ('
        'SELECT q.msg_id FROM pgmq.%1$I AS q WHERE q.vt <= now() '
        'ORDER BY pgflow_kombu.message_priority(q.message) DESC, q.vt, q.msg_id '
        'LIMIT $1 FOR UPDATE SKIP LOCKED), '
        'taken AS (UPDATE pgmq.%1$I AS q '
        'SET vt = clock_timestamp() + make_interval(secs => $2), '
        'read_ct = q.read_ct + 1 FROM picked WHERE q.msg_id = picked.msg_id '
        'RETURNING q.msg_id) '
        'SELECT array_agg(taken.msg_id ORDER BY taken.msg_id) FROM taken'', '
        '''q_'' || lower(queue)) INTO ids USING qty, visibility; RETURN ids;';
END;
$$;

-- (Re)generates queue_read for every flow whose queue table exists. Serialised by an advisory
-- lock; runs as the owner of the schema (see refresh_queue_statements).
CREATE OR REPLACE FUNCTION pgflow_kombu.refresh_queue_reads() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    v_names text[];
    v_reads text[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgflow_kombu.refresh_queue_reads'));
    SELECT coalesce(array_agg(f.flow_slug ORDER BY f.flow_slug COLLATE "C"), '{}'),
           coalesce(array_agg(pgflow_kombu.queue_read_statement(quote_ident(q.relname))
                              ORDER BY f.flow_slug COLLATE "C"), '{}')
    INTO v_names, v_reads
    FROM pgflow.flows AS f
    JOIN pg_catalog.pg_class AS q
      ON q.oid = to_regclass('pgmq.' || quote_ident('q_' || lower(f.flow_slug)));
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION pgflow_kombu.queue_read('
        'queue text, qty integer, visibility integer) RETURNS bigint[] '
        'LANGUAGE plpgsql SET search_path = '''' SET plan_cache_mode = force_generic_plan '
        'AS %L',
        E'DECLARE ids bigint[];\nBEGIN\n'
        || pgflow_kombu.queue_dispatch(v_names, v_reads, 1, cardinality(v_names))
        || pgflow_kombu.queue_read_statement(NULL) || E'\nEND;');
END;
$$;

CREATE OR REPLACE FUNCTION pgflow_kombu.refresh_queue_reads_on_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM pgflow_kombu.refresh_queue_reads();
    RETURN NULL;
END;
$$;

-- At commit, when create_flow has made the flow's queue (it inserts the flow row first).
DROP TRIGGER IF EXISTS pgflow_kombu_queue_reads ON pgflow.flows;
CREATE CONSTRAINT TRIGGER pgflow_kombu_queue_reads
AFTER INSERT ON pgflow.flows
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
EXECUTE FUNCTION pgflow_kombu.refresh_queue_reads_on_commit();

SELECT pgflow_kombu.refresh_queue_reads();

CREATE OR REPLACE FUNCTION pgflow_kombu.read_and_claim(
    flow_slugs text[],
    worker_ids uuid[],
    qty integer,
    read_visibility integer
) RETURNS TABLE (
    flow_slug text,
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
AS $$
#variable_conflict use_column
DECLARE
    left_to_claim integer := qty;
    position integer;
    flow text;
    ids bigint[];
    claimed integer;
BEGIN
    IF qty IS NULL OR qty < 1 THEN
        RAISE EXCEPTION 'read_and_claim: qty must be a positive number of tasks, got %',
            coalesce(qty::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF read_visibility IS NULL OR read_visibility < 0 THEN
        RAISE EXCEPTION 'read_and_claim: read_visibility must be >= 0 seconds, got %',
            coalesce(read_visibility::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF flow_slugs IS NULL OR worker_ids IS NULL
       OR cardinality(flow_slugs) <> cardinality(worker_ids) THEN
        RAISE EXCEPTION 'read_and_claim: flow_slugs and worker_ids must be arrays of one length '
                        '(one worker id per flow), got % and %',
            coalesce(cardinality(flow_slugs)::text, 'NULL'),
            coalesce(cardinality(worker_ids)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(flow_slugs, NULL) IS NOT NULL OR array_position(worker_ids, NULL) IS NOT NULL
    THEN
        RAISE EXCEPTION 'read_and_claim: flow_slugs and worker_ids must not contain NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(DISTINCT lower(s)) FROM unnest(flow_slugs) AS s) <> cardinality(flow_slugs)
    THEN
        RAISE EXCEPTION 'read_and_claim: flow_slugs lists a flow twice: %', flow_slugs
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(worker_ids) AS w(id)
               WHERE NOT EXISTS (SELECT 1 FROM pgflow.workers AS k WHERE k.worker_id = w.id)) THEN
        RAISE EXCEPTION 'read_and_claim: unknown worker id in % (register it in pgflow.workers)',
            worker_ids
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- Every queue is checked before any is read: a bad name changes nothing.
    FOR position IN 1 .. coalesce(cardinality(flow_slugs), 0) LOOP
        IF to_regclass('pgmq.' || quote_ident('q_' || lower(flow_slugs[position]))) IS NULL THEN
            RAISE EXCEPTION 'read_and_claim: flow "%" has no queue (is it a flow of this database?)',
                flow_slugs[position]
                USING ERRCODE = 'undefined_table';
        END IF;
    END LOOP;

    FOR position IN 1 .. coalesce(cardinality(flow_slugs), 0) LOOP
        EXIT WHEN left_to_claim < 1;
        flow := flow_slugs[position];
        ids := pgflow_kombu.queue_read(flow, left_to_claim, read_and_claim.read_visibility);
        CONTINUE WHEN ids IS NULL;
        claimed := 0;
        FOR flow_slug, run_id, step_slug, task_index, msg_id, input, attempt, timeout IN
            SELECT flow, c.run_id, c.step_slug, c.task_index, c.msg_id, c.input, c.attempt,
                   c.timeout
            FROM pgflow_kombu.claim_tasks(flow_slug => flow, msg_ids => ids,
                                          worker_id => worker_ids[position],
                                          read_visibility => read_and_claim.read_visibility) AS c
        LOOP
            claimed := claimed + 1;
            RETURN NEXT;
        END LOOP;
        left_to_claim := left_to_claim - claimed;
    END LOOP;
END;
$$;
