-- Queue lifetimes of the kombu transport, counted over every process that uses the database:
--
-- * an auto-delete queue is deleted, with its bindings, when its last consumer goes away (cancelled,
--   its channel or connection closed, or its process gone);
-- * a queue declared with x-expires (milliseconds) is deleted, with its bindings and messages, once
--   it was unused for that long: no consumer, no basic_get, no redeclaration.
--
-- Every consumer is a row of pgflow_kombu.consumers that names the database backend of the
-- connection its transport listens on (pid and start time). A consumer lives as long as that
-- connection: when its process dies, even by SIGKILL, the connection closes and the consumer is
-- gone, without any last word from the process. Live transports call pgflow_kombu.sweep() every few
-- seconds: it forgets consumers whose backend is gone and deletes the queues whose time has come.

-- declared_at is now the time of the latest declaration of an auto-delete or expiring queue.
-- expires_at: when an x-expires queue goes unless it is used before; NULL while it has consumers
-- (and always for queues without x-expires).
ALTER TABLE pgflow_kombu.queues
    ADD COLUMN expires_ms double precision CHECK (expires_ms > 0),
    ADD COLUMN expires_at timestamptz;

UPDATE pgflow_kombu.queues
SET expires_ms = (arguments ->> 'x-expires')::double precision,
    expires_at = now() + make_interval(secs => (arguments ->> 'x-expires')::double precision / 1000.0)
WHERE jsonb_typeof(arguments -> 'x-expires') = 'number'
  AND (arguments ->> 'x-expires')::double precision > 0;

CREATE INDEX queues_expires_at_idx ON pgflow_kombu.queues (expires_at) WHERE expires_at IS NOT NULL;

-- One row per queue a channel consumes (owner: a token of that channel).
CREATE TABLE pgflow_kombu.consumers (
    queue text NOT NULL,
    owner text NOT NULL,
    backend_pid integer NOT NULL,
    backend_start timestamptz,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, owner)
);

-- Whether the backend that was started at ``started`` with process id ``pid`` still runs. Sessions
-- of other roles may not show their start time; for them the process id alone decides.
CREATE FUNCTION pgflow_kombu.backend_alive(pid integer, started timestamptz) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM pg_stat_get_activity(backend_alive.pid) AS a
        WHERE a.backend_start IS NULL
           OR backend_alive.started IS NULL
           OR a.backend_start = backend_alive.started
    )
$$;

-- Remove a kombu queue: its bindings, consumers, record, pgmq queue and wake-up function.
CREATE OR REPLACE FUNCTION pgflow_kombu.delete_queue(queue_name text, pgmq_name text) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    tbl text := 'q_' || lower(pgmq_name);
BEGIN
    DELETE FROM pgflow_kombu.bindings AS b WHERE b.queue = delete_queue.queue_name;
    DELETE FROM pgflow_kombu.consumers AS c WHERE c.queue = delete_queue.queue_name;
    DELETE FROM pgflow_kombu.queues AS q WHERE q.name = delete_queue.queue_name;
    IF to_regclass(format('pgmq.%I', tbl)) IS NOT NULL THEN
        PERFORM pgmq.drop_queue(pgmq_name);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS pgflow_kombu.%I()', 'wake_' || tbl);
END;
$$;

-- A queue (its row locked by the caller) just lost a consumer. With none left, it is deleted when
-- ``remove`` says so (returns true: an auto-delete queue), or else an expiring queue starts counting
-- its unused time.
CREATE FUNCTION pgflow_kombu.consumer_left(rec pgflow_kombu.queues, remove boolean)
RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgflow_kombu.consumers AS c WHERE c.queue = rec.name) THEN
        RETURN false;
    END IF;
    IF remove THEN
        PERFORM pgflow_kombu.delete_queue(rec.name, rec.pgmq_name);
        RETURN true;
    END IF;
    IF rec.expires_ms IS NOT NULL THEN
        UPDATE pgflow_kombu.queues AS q
        SET expires_at = now() + make_interval(secs => q.expires_ms / 1000.0)
        WHERE q.name = rec.name;
    END IF;
    RETURN false;
END;
$$;

-- Start consuming queue_name on behalf of ``owner`` (a channel), whose transport listens on the
-- connection of backend ``pid``. Also makes sure the pgmq queue is there (it may have been deleted
-- since this process last looked).
CREATE FUNCTION pgflow_kombu.add_consumer(
    queue_name text,
    pgmq_name text,
    owner text,
    pid integer
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    -- The queue's row lock orders this against a sweep or a cancel deciding to delete the queue.
    PERFORM 1 FROM pgflow_kombu.queues AS q WHERE q.name = add_consumer.queue_name
    FOR NO KEY UPDATE;
    UPDATE pgflow_kombu.queues AS q SET expires_at = NULL
    WHERE q.name = add_consumer.queue_name AND q.expires_at IS NOT NULL;
    PERFORM pgflow_kombu.ensure_queue(add_consumer.pgmq_name);
    INSERT INTO pgflow_kombu.consumers AS c (queue, owner, backend_pid, backend_start)
    VALUES (
        add_consumer.queue_name,
        add_consumer.owner,
        add_consumer.pid,
        (SELECT a.backend_start FROM pg_stat_get_activity(add_consumer.pid) AS a)
    )
    ON CONFLICT ON CONSTRAINT consumers_pkey DO UPDATE
    SET backend_pid = EXCLUDED.backend_pid, backend_start = EXCLUDED.backend_start,
        since = EXCLUDED.since;
END;
$$;

-- Stop consuming; returns true when that deleted the queue (auto-delete, last consumer).
CREATE FUNCTION pgflow_kombu.remove_consumer(queue_name text, owner text) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    rec pgflow_kombu.queues;
BEGIN
    SELECT * INTO rec FROM pgflow_kombu.queues AS q WHERE q.name = remove_consumer.queue_name
    FOR UPDATE;
    DELETE FROM pgflow_kombu.consumers AS c
    WHERE c.queue = remove_consumer.queue_name AND c.owner = remove_consumer.owner;
    IF rec.name IS NULL THEN
        RETURN false;
    END IF;
    RETURN pgflow_kombu.consumer_left(rec, rec.auto_delete);
END;
$$;

-- Use of an expiring queue without a consumer (basic_get): it lives x-expires longer, plus
-- ``slack_ms``, the longest a transport lets pass between two such renewals (it does not renew on
-- every message).
CREATE FUNCTION pgflow_kombu.touch_queue(queue_name text, slack_ms double precision) RETURNS void
LANGUAGE sql
AS $$
    UPDATE pgflow_kombu.queues AS q
    SET expires_at = now() + make_interval(secs => (q.expires_ms + touch_queue.slack_ms) / 1000.0)
    WHERE q.name = touch_queue.queue_name AND q.expires_at IS NOT NULL;
$$;

-- Housekeeping, run by live transports every few seconds (at most one at a time: the others return
-- at once). Forgets consumers whose connection is gone, deletes the auto-delete queues that lost
-- their last consumer that way (unless declared again since that consumer started: a process that
-- reconnected declares its queues again before it consumes them), and deletes the queues whose
-- x-expires ran out. Returns the names of the queues it deleted. A queue that cannot be locked
-- soon (a long transaction holds its table), or that this role may not drop, is left for later.
CREATE FUNCTION pgflow_kombu.sweep() RETURNS SETOF text
LANGUAGE plpgsql
SET lock_timeout = '2s'
AS $$
DECLARE
    orphaned text;
    rec pgflow_kombu.queues;
    last_since timestamptz;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('pgflow_kombu.sweep')) THEN
        RETURN;
    END IF;

    FOR orphaned IN
        SELECT DISTINCT c.queue
        FROM pgflow_kombu.consumers AS c
        WHERE NOT pgflow_kombu.backend_alive(c.backend_pid, c.backend_start)
        ORDER BY c.queue
    LOOP
        BEGIN
            -- The queue row first, its consumer rows second: the order add_consumer and
            -- remove_consumer take.
            rec := NULL;
            SELECT * INTO rec FROM pgflow_kombu.queues AS q WHERE q.name = orphaned FOR UPDATE;
            -- Look at the backends again: a consumer that registered meanwhile may run on a
            -- backend that started after the first look, which that (cached) look does not show.
            PERFORM pg_stat_clear_snapshot();
            WITH gone AS (
                DELETE FROM pgflow_kombu.consumers AS c
                WHERE c.queue = orphaned
                  AND NOT pgflow_kombu.backend_alive(c.backend_pid, c.backend_start)
                RETURNING c.since
            )
            SELECT max(gone.since) INTO last_since FROM gone;
            IF rec.name IS NOT NULL AND last_since IS NOT NULL
               AND pgflow_kombu.consumer_left(rec, rec.auto_delete AND rec.declared_at <= last_since)
            THEN
                RETURN NEXT rec.name;
            END IF;
        EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN
            NULL;  -- next time (or by a role allowed to drop the queue)
        END;
    END LOOP;

    FOR rec IN
        SELECT * FROM pgflow_kombu.queues AS q
        WHERE q.expires_at <= now()
        ORDER BY q.expires_at
        FOR UPDATE SKIP LOCKED
    LOOP
        IF EXISTS (SELECT 1 FROM pgflow_kombu.consumers AS c WHERE c.queue = rec.name) THEN
            UPDATE pgflow_kombu.queues AS q SET expires_at = NULL WHERE q.name = rec.name;
            CONTINUE;
        END IF;
        BEGIN
            PERFORM pgflow_kombu.delete_queue(rec.name, rec.pgmq_name);
            RETURN NEXT rec.name;
        EXCEPTION WHEN lock_not_available OR insufficient_privilege THEN
            NULL;  -- next time (or by a role allowed to drop the queue)
        END;
    END LOOP;
END;
$$;
