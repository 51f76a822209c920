-- Static statements for the flow queues (schema pgflow_kombu).
--
-- A pgmq queue is a table of its own (pgmq.q_<name>), so a statement on "a queue" is dynamic:
-- parsed and planned on every call, about 0.1 ms each, which was a third of start_flow and most
-- of a batch archive. queue_send, queue_archive and queue_set_vt are generated functions with one
-- static statement per flow queue (its plan cached per session), reached through a binary search
-- on the queue name; a queue they do not know yet takes the dynamic path, which does the same
-- thing. They are generated again at the commit of every transaction that creates a flow (ours
-- or upstream's create_flow), and by refresh_queue_statements().
--
--   queue_send(queue, messages jsonb[], delays integer[]) -> bigint[]: one message per element,
--     visible after its delay in seconds; returns the msg_ids in order.
--   queue_archive(queue, msg_ids bigint[]) -> void: moves those messages to pgmq.a_<name>, as
--     pgmq.archive does (every column the two tables share).
--   queue_set_vt(queue, msg_ids bigint[], offsets integer[]) -> void: each message visible again
--     offsets[i] seconds from now, as pgmq.set_vt does.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- The statements of one queue, as plpgsql source: a static statement for the named queue's
-- tables (p_table_q, p_table_a, p_columns: quoted identifiers) or, with NULLs, the dynamic one.
CREATE OR REPLACE FUNCTION pgflow_kombu.queue_statement(
    p_op text, p_table_q text, p_table_a text, p_columns text
) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
BEGIN
    IF p_op = 'send' AND p_table_q IS NOT NULL THEN
        RETURN format(
            'WITH sent AS (INSERT INTO pgmq.%s (vt, message) '
            'SELECT clock_timestamp() + make_interval(secs => m.delay), m.message '
            'FROM unnest(queue_send.messages, queue_send.delays) AS m(message, delay) '
            'RETURNING msg_id) '
            'SELECT array_agg(sent.msg_id ORDER BY sent.msg_id) INTO ids FROM sent; RETURN ids;',
            p_table_q);
    ELSIF p_op = 'send' THEN
        RETURN 'EXECUTE format(''WITH sent AS (INSERT INTO pgmq.%I (vt, message) '
            'SELECT clock_timestamp() + make_interval(secs => m.delay), m.message '
            'FROM unnest($1, $2) AS m(message, delay) RETURNING msg_id) '
            'SELECT array_agg(sent.msg_id ORDER BY sent.msg_id) FROM sent'', '
            '''q_'' || lower(queue)) INTO ids USING messages, delays; RETURN ids;';
    ELSIF p_op = 'archive' AND p_table_q IS NOT NULL THEN
        RETURN format(
            'WITH archived AS (DELETE FROM pgmq.%1$s WHERE msg_id = ANY(queue_archive.msg_ids) '
            'RETURNING %3$s) INSERT INTO pgmq.%2$s (%3$s) SELECT %3$s FROM archived; RETURN;',
            p_table_q, p_table_a, p_columns);
    ELSIF p_op = 'archive' THEN
        RETURN 'PERFORM pgmq.archive(queue, msg_ids); RETURN;';
    ELSIF p_op = 'set_vt' AND p_table_q IS NOT NULL THEN
        RETURN format(
            'UPDATE pgmq.%s AS q SET vt = clock_timestamp() + make_interval(secs => i.secs) '
            'FROM unnest(queue_set_vt.msg_ids, queue_set_vt.offsets) AS i(id, secs) '
            'WHERE q.msg_id = i.id; RETURN;',
            p_table_q);
    ELSIF p_op = 'set_vt' THEN
        RETURN 'EXECUTE format(''UPDATE pgmq.%I AS q '
            'SET vt = clock_timestamp() + make_interval(secs => i.secs) '
            'FROM unnest($1, $2) AS i(id, secs) WHERE q.msg_id = i.id'', '
            '''q_'' || lower(queue)) USING msg_ids, offsets; RETURN;';
    END IF;
    RAISE EXCEPTION 'unknown queue statement "%"', p_op;
END;
$$;

-- plpgsql that runs the statement of `queue` among the sorted names: a binary search on the name
-- (a few comparisons however many flows there are), falling through when none matches.
CREATE OR REPLACE FUNCTION pgflow_kombu.queue_dispatch(
    p_names text[], p_statements text[], p_lo integer, p_hi integer
) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = '' AS $$
DECLARE
    v_mid integer;
BEGIN
    IF p_lo > p_hi THEN
        RETURN '';
    ELSIF p_lo = p_hi THEN
        RETURN format(E'IF queue = %L THEN %s END IF;\n', p_names[p_lo], p_statements[p_lo]);
    END IF;
    v_mid := (p_lo + p_hi) / 2;
    RETURN format(E'IF queue COLLATE "C" <= %L THEN\n%sELSE\n%sEND IF;\n',
        p_names[v_mid],
        pgflow_kombu.queue_dispatch(p_names, p_statements, p_lo, v_mid),
        pgflow_kombu.queue_dispatch(p_names, p_statements, v_mid + 1, p_hi));
END;
$$;

-- (Re)generates queue_send, queue_archive and queue_set_vt for every flow whose queue tables
-- exist. Serialised by an advisory lock: two transactions replacing one function at once would
-- fail. Runs as the owner of the schema, so that a role allowed to create flows need not own
-- these functions.
CREATE OR REPLACE FUNCTION pgflow_kombu.refresh_queue_statements() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
    v_names text[];
    v_sends text[];
    v_archives text[];
    v_set_vts text[];
    v_fn record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgflow_kombu.refresh_queue_statements'));

    SELECT coalesce(array_agg(q.name ORDER BY q.name COLLATE "C"), '{}'),
           coalesce(array_agg(pgflow_kombu.queue_statement('send', q.q_table, q.a_table, q.columns)
                              ORDER BY q.name COLLATE "C"), '{}'),
           coalesce(array_agg(pgflow_kombu.queue_statement('archive', q.q_table, q.a_table,
                                                            q.columns)
                              ORDER BY q.name COLLATE "C"), '{}'),
           coalesce(array_agg(pgflow_kombu.queue_statement('set_vt', q.q_table, NULL, NULL)
                              ORDER BY q.name COLLATE "C"), '{}')
    INTO v_names, v_sends, v_archives, v_set_vts
    FROM (
        SELECT f.flow_slug AS name,
               quote_ident(q.relname) AS q_table,
               quote_ident(a.relname) AS a_table,
               (SELECT string_agg(quote_ident(qa.attname), ', ' ORDER BY qa.attnum)
                FROM pg_catalog.pg_attribute qa
                JOIN pg_catalog.pg_attribute aa
                  ON aa.attrelid = a.oid AND aa.attname = qa.attname
                 AND aa.attnum > 0 AND NOT aa.attisdropped
                WHERE qa.attrelid = q.oid AND qa.attnum > 0 AND NOT qa.attisdropped) AS columns
        FROM pgflow.flows AS f
        JOIN pg_catalog.pg_class AS q
          ON q.oid = to_regclass('pgmq.' || quote_ident('q_' || lower(f.flow_slug)))
        JOIN pg_catalog.pg_class AS a
          ON a.oid = to_regclass('pgmq.' || quote_ident('a_' || lower(f.flow_slug)))
    ) AS q;

    FOR v_fn IN
        SELECT * FROM (VALUES
            ('queue_send', 'send', 'queue text, messages jsonb[], delays integer[]', 'bigint[]',
             E'DECLARE ids bigint[];\n', v_sends),
            ('queue_archive', 'archive', 'queue text, msg_ids bigint[]', 'void', '', v_archives),
            ('queue_set_vt', 'set_vt', 'queue text, msg_ids bigint[], offsets integer[]', 'void',
             '', v_set_vts)
        ) AS fn(name, op, args, result, prelude, statements)
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION pgflow_kombu.%I(%s) RETURNS %s '
            'LANGUAGE plpgsql SET search_path = '''' AS %L',
            v_fn.name, v_fn.args, v_fn.result,
            v_fn.prelude || E'BEGIN\n'
            || pgflow_kombu.queue_dispatch(v_names, v_fn.statements, 1, cardinality(v_names))
            || pgflow_kombu.queue_statement(v_fn.op, NULL, NULL, NULL) || E'\nEND;');
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION pgflow_kombu.refresh_queue_statements_on_commit() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
    PERFORM pgflow_kombu.refresh_queue_statements();
    RETURN NULL;
END;
$$;

-- At commit, when create_flow has made the flow's queue (it inserts the flow row first).
DROP TRIGGER IF EXISTS pgflow_kombu_queue_statements ON pgflow.flows;
CREATE CONSTRAINT TRIGGER pgflow_kombu_queue_statements
AFTER INSERT ON pgflow.flows
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW
EXECUTE FUNCTION pgflow_kombu.refresh_queue_statements_on_commit();

SELECT pgflow_kombu.refresh_queue_statements();
