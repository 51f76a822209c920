-- The kombu transport (pgflow_kombu.transport): exchanges, queues and bindings shared by every
-- process on the database, and the helpers its reads and publishes run on pgmq's queue tables.
-- Messages stay plain pgmq rows (msg_id, read_ct, enqueued_at, vt, message), so pgmq's own
-- functions and other pgmq/pgflow workers keep working on the same queues.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- Declared exchanges. An exchange that was never declared routes as 'direct'.
CREATE TABLE pgflow_kombu.exchanges (
    name text PRIMARY KEY,
    type text NOT NULL CHECK (type IN ('direct', 'topic', 'fanout')),
    durable boolean NOT NULL DEFAULT true,
    auto_delete boolean NOT NULL DEFAULT false,
    arguments jsonb NOT NULL DEFAULT '{}'::jsonb,
    declared_at timestamptz NOT NULL DEFAULT now()
);

-- Declared kombu queues and the pgmq queue each one is stored in (see transport/names.py).
CREATE TABLE pgflow_kombu.queues (
    name text PRIMARY KEY,
    pgmq_name text NOT NULL CHECK (length(pgmq_name) BETWEEN 1 AND 47),
    auto_delete boolean NOT NULL DEFAULT false,
    arguments jsonb NOT NULL DEFAULT '{}'::jsonb,
    declared_at timestamptz NOT NULL DEFAULT now()
);

-- Bindings of queues to exchanges. pattern is the routing key as an anchored regular expression
-- matched against '.' || routing_key (used by topic exchanges only).
CREATE TABLE pgflow_kombu.bindings (
    exchange text NOT NULL,
    routing_key text NOT NULL,
    queue text NOT NULL,
    pgmq_name text NOT NULL,
    pattern text NOT NULL,
    arguments jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (exchange, routing_key, queue)
);
CREATE INDEX bindings_queue_idx ON pgflow_kombu.bindings (queue);

-- AMQP priority of a stored message: properties.priority of a kombu envelope clamped to 0..9,
-- 0 for anything else (pgflow's task messages). Immutable so that queue tables can index it.
CREATE FUNCTION pgflow_kombu.message_priority(message jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN jsonb_typeof(message -> 'properties' -> 'priority') = 'number'
        THEN least(greatest(floor((message -> 'properties' ->> 'priority')::numeric), 0), 9)::integer
        ELSE 0
    END
$$;

-- Whether a message outlived its time to live: the envelope's properties.expiration (milliseconds,
-- as kombu writes it) or the queue's x-message-ttl, counted from when it was published.
CREATE FUNCTION pgflow_kombu.message_expired(
    message jsonb,
    enqueued_at timestamptz,
    queue_ttl_ms double precision
) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(
        enqueued_at + make_interval(secs => least(
            CASE
                WHEN (message -> 'properties' ->> 'expiration') ~ '^[0-9]{1,15}(\.[0-9]+)?$'
                THEN (message -> 'properties' ->> 'expiration')::double precision
            END,
            queue_ttl_ms
        ) / 1000.0) <= clock_timestamp(),
        false
    )
$$;

-- Wake-ups: each consumed queue table gets an AFTER INSERT trigger that sends a NOTIFY on channel
-- 'pgflow_kombu.q_<name>' (no payload), so that pgmq.send_batch and pgflow's own inserts wake
-- consumers too (the rows of one transaction make one notification: PostgreSQL folds repeats). A
-- notifying commit takes a database-wide lock (notifying commits are serialised), so the
-- notification is sent only when it can matter: when none of the messages just before the new one
-- (by msg_id, a window of 16) still waits for its first read. If one does, consumers are already
-- due to read: its insert woke them, or they are busy and read again when they have room. (A
-- consumer also re-reads shortly after a read that emptied the queue, which covers an insert that
-- raced with that read.) The window is a primary-key range of fixed size, so the check costs the
-- same however many consumed messages still leave dead entries in the table's indexes (a scan of
-- the vt index from its start would wade through all of them until the next vacuum). A row-level
-- trigger costs less per insert than a statement-level one with a transition table. The trigger
-- function is made per table, so that its query is planned once per session, not per insert.
CREATE FUNCTION pgflow_kombu.wake_function_sql(tbl text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(
        'CREATE OR REPLACE FUNCTION pgflow_kombu.%I() RETURNS trigger LANGUAGE plpgsql '
        'SET enable_seqscan = off AS $body$ '
        'BEGIN '
        '  PERFORM FROM pgmq.%I WHERE msg_id < NEW.msg_id AND msg_id >= NEW.msg_id - 16 '
        '    AND read_ct = 0 AND vt <= now() LIMIT 1; '
        '  IF NOT FOUND THEN '
        '    PERFORM pg_notify(%L, %L); '
        '  END IF; '
        '  RETURN NULL; '
        'END $body$',
        'wake_' || tbl, tbl, 'pgflow_kombu.' || tbl, '')
$$;

-- Make sure a pgmq queue exists and carries what the transport needs: the wake-up trigger and an
-- index in delivery order: priority, then the time the message became visible, then msg_id.
-- Messages that consumers hold (vt in the future) sort behind the visible ones of their priority,
-- so reads never wade through them. Cheap when everything is already there, so it can run
-- whenever a queue is declared or consumed (also for queues pgflow created).
CREATE FUNCTION pgflow_kombu.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    tbl text := 'q_' || lower(queue_name);
    rel regclass;
BEGIN
    rel := to_regclass(format('pgmq.%I', tbl));
    IF rel IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'pgflow_kombu_wake')
       AND to_regclass(format('pgmq.%I', tbl || '_kombu_idx')) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgflow_kombu.queue.' || tbl));
    IF to_regclass(format('pgmq.%I', tbl)) IS NULL THEN
        PERFORM pgmq.create(queue_name);
    END IF;
    rel := to_regclass(format('pgmq.%I', tbl));
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND tgname = 'pgflow_kombu_wake') THEN
        EXECUTE pgflow_kombu.wake_function_sql(tbl);
        EXECUTE format(
            'CREATE TRIGGER pgflow_kombu_wake AFTER INSERT ON pgmq.%I '
            'FOR EACH ROW EXECUTE FUNCTION pgflow_kombu.%I()', tbl, 'wake_' || tbl);
    END IF;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON pgmq.%I '
        '(pgflow_kombu.message_priority(message) DESC, vt, msg_id)', tbl || '_kombu_idx', tbl);
END;
$$;

-- Route one message through an exchange and store a copy in every bound queue, in one round trip.
-- Returns the number of queues it went to (0: nothing bound matched; the message is dropped, as
-- AMQP does). Bindings whose queue table is gone are skipped.
CREATE FUNCTION pgflow_kombu.publish(
    exchange text,
    routing_key text,
    message jsonb,
    delay_seconds double precision DEFAULT 0
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    kind text;
    target text;
    delivered integer := 0;
BEGIN
    SELECT e.type INTO kind FROM pgflow_kombu.exchanges AS e WHERE e.name = publish.exchange;
    kind := coalesce(kind, 'direct');
    FOR target IN
        SELECT DISTINCT 'q_' || lower(b.pgmq_name)
        FROM pgflow_kombu.bindings AS b
        WHERE b.exchange = publish.exchange
          AND CASE kind
                WHEN 'fanout' THEN true
                WHEN 'topic' THEN ('.' || publish.routing_key) ~ b.pattern
                ELSE b.routing_key = publish.routing_key
              END
    LOOP
        CONTINUE WHEN to_regclass(format('pgmq.%I', target)) IS NULL;
        EXECUTE format(
            'INSERT INTO pgmq.%I (vt, message) '
            'VALUES (clock_timestamp() + make_interval(secs => $1), $2)', target)
        USING greatest(delay_seconds, 0), message;
        delivered := delivered + 1;
    END LOOP;
    RETURN delivered;
END;
$$;

-- Remove a kombu queue: its bindings, its record, its pgmq queue and its wake-up function.
CREATE FUNCTION pgflow_kombu.delete_queue(queue_name text, pgmq_name text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    tbl text := 'q_' || lower(pgmq_name);
BEGIN
    DELETE FROM pgflow_kombu.bindings AS b WHERE b.queue = delete_queue.queue_name;
    DELETE FROM pgflow_kombu.queues AS q WHERE q.name = delete_queue.queue_name;
    IF to_regclass(format('pgmq.%I', tbl)) IS NOT NULL THEN
        PERFORM pgmq.drop_queue(pgmq_name);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS pgflow_kombu.%I()', 'wake_' || tbl);
END;
$$;
