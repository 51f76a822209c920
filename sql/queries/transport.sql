-- Queries of the kombu transport (pgflow_kombu.transport). {table} is a pgmq queue table
-- ("q_" + lower(pgmq queue name)), passed through psycopg.sql.Identifier.

-- name: put
INSERT INTO pgmq.{table} (vt, message)
VALUES (clock_timestamp() + make_interval(secs => %(delay)s), %(message)s::jsonb);

-- name: publish
SELECT pgflow_kombu.publish(%(exchange)s, %(routing_key)s, %(message)s::jsonb, %(delay)s);

-- name: read
-- Take up to %(limit)s visible messages in delivery order (priority, then the time they became
-- visible, then msg_id) and hide them for %(vt)s seconds; expired ones are deleted instead and
-- come back as rows with a NULL read_ct. vt <= now() (not clock_timestamp()) lets the index
-- bound the scan to visible messages.
WITH picked AS (
    SELECT msg_id, vt AS ready_at,
           pgflow_kombu.message_expired(message, enqueued_at, %(ttl_ms)s) AS expired
    FROM pgmq.{table}
    WHERE vt <= now()
    ORDER BY pgflow_kombu.message_priority(message) DESC, vt, msg_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), dropped AS (
    DELETE FROM pgmq.{table} AS q
    USING picked
    WHERE q.msg_id = picked.msg_id AND picked.expired
    RETURNING q.msg_id
), taken AS (
    UPDATE pgmq.{table} AS q
    SET vt = clock_timestamp() + make_interval(secs => %(vt)s), read_ct = q.read_ct + 1
    FROM picked
    WHERE q.msg_id = picked.msg_id AND NOT picked.expired
    RETURNING q.msg_id, q.read_ct, q.message, pgflow_kombu.message_priority(q.message) AS priority,
              picked.ready_at
)
SELECT msg_id, read_ct, message::text AS message
FROM (
    SELECT msg_id, read_ct, message, priority, ready_at FROM taken
    UNION ALL
    SELECT msg_id, NULL, NULL, -1, NULL FROM dropped
) AS rows
ORDER BY priority DESC, ready_at, msg_id;

-- name: pop
-- Like read, for consumers without acknowledgements: the messages are deleted as they are taken.
WITH picked AS (
    SELECT msg_id, vt AS ready_at,
           pgflow_kombu.message_expired(message, enqueued_at, %(ttl_ms)s) AS expired
    FROM pgmq.{table}
    WHERE vt <= now()
    ORDER BY pgflow_kombu.message_priority(message) DESC, vt, msg_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), taken AS (
    DELETE FROM pgmq.{table} AS q
    USING picked
    WHERE q.msg_id = picked.msg_id
    RETURNING q.msg_id, q.read_ct + 1 AS read_ct, q.message, picked.expired, picked.ready_at,
              pgflow_kombu.message_priority(q.message) AS priority
)
SELECT msg_id, CASE WHEN expired THEN NULL ELSE read_ct END AS read_ct,
       CASE WHEN expired THEN NULL ELSE message::text END AS message
FROM taken
ORDER BY expired, priority DESC, ready_at, msg_id;

-- name: delete
DELETE FROM pgmq.{table} WHERE msg_id = ANY(%(ids)s);

-- name: archive
SELECT pgmq.archive(%(queue)s, %(ids)s);

-- name: make_visible
-- Visible at once, back in its place in the line (ordered by when it first became visible).
UPDATE pgmq.{table} SET vt = least(enqueued_at, clock_timestamp()) WHERE msg_id = ANY(%(ids)s);

-- name: extend
UPDATE pgmq.{table}
SET vt = clock_timestamp() + make_interval(secs => %(vt)s)
WHERE msg_id = ANY(%(ids)s);

-- name: purge
-- Ready messages and those waiting for a delay; messages a consumer holds are left alone.
DELETE FROM pgmq.{table} WHERE vt <= clock_timestamp() OR read_ct = 0;

-- name: size
SELECT count(*) FROM pgmq.{table} WHERE vt <= clock_timestamp() OR read_ct = 0;

-- name: queue_exists
SELECT to_regclass(%(qualified)s) IS NOT NULL;

-- name: ensure_queue
SELECT pgflow_kombu.ensure_queue(%(pgmq_name)s);

-- name: record_queue
-- A declaration. Declaring an auto-delete or expiring queue again renews it (declared_at, and the
-- time an expiring queue may stay unused; see 0011_transport_expiry.sql).
INSERT INTO pgflow_kombu.queues (name, pgmq_name, auto_delete, arguments, expires_ms, expires_at)
VALUES (%(name)s, %(pgmq_name)s, %(auto_delete)s, %(arguments)s::jsonb,
        %(expires_ms)s::double precision,
        now() + make_interval(secs => %(expires_ms)s::double precision / 1000.0))
ON CONFLICT (name) DO UPDATE
SET auto_delete = EXCLUDED.auto_delete, arguments = EXCLUDED.arguments,
    expires_ms = EXCLUDED.expires_ms, expires_at = EXCLUDED.expires_at, declared_at = now()
WHERE (queues.auto_delete, queues.arguments) IS DISTINCT FROM
      (EXCLUDED.auto_delete, EXCLUDED.arguments)
   OR EXCLUDED.auto_delete OR EXCLUDED.expires_ms IS NOT NULL;

-- name: queue_record
SELECT auto_delete, arguments FROM pgflow_kombu.queues WHERE name = %(name)s;

-- name: delete_queue
-- With if_unused, a queue that a live consumer reads stays.
SELECT pgflow_kombu.delete_queue(%(name)s, %(pgmq_name)s)
WHERE NOT %(if_unused)s OR NOT EXISTS (
    SELECT 1 FROM pgflow_kombu.consumers AS c
    WHERE c.queue = %(name)s AND pgflow_kombu.backend_alive(c.backend_pid, c.backend_start)
);

-- name: touch_queue
SELECT pgflow_kombu.touch_queue(%(name)s, %(slack_ms)s);

-- name: add_consumer
SELECT pgflow_kombu.add_consumer(%(name)s, %(pgmq_name)s, %(owner)s, %(pid)s);

-- name: remove_consumer
SELECT pgflow_kombu.remove_consumer(%(name)s, %(owner)s);

-- name: sweep
SELECT pgflow_kombu.sweep();

-- name: declare_exchange
-- Returns the type the exchange has (the existing one when it was declared before).
WITH inserted AS (
    INSERT INTO pgflow_kombu.exchanges (name, type, durable, auto_delete, arguments)
    VALUES (%(name)s, %(type)s, %(durable)s, %(auto_delete)s, %(arguments)s::jsonb)
    ON CONFLICT (name) DO NOTHING
    RETURNING type
)
SELECT type FROM inserted
UNION ALL
SELECT type FROM pgflow_kombu.exchanges WHERE name = %(name)s
LIMIT 1;

-- name: exchange_type
SELECT type FROM pgflow_kombu.exchanges WHERE name = %(name)s;

-- name: delete_exchange
WITH unbound AS (
    DELETE FROM pgflow_kombu.bindings WHERE exchange = %(name)s
)
DELETE FROM pgflow_kombu.exchanges WHERE name = %(name)s;

-- name: exchange_in_use
SELECT EXISTS (SELECT 1 FROM pgflow_kombu.bindings WHERE exchange = %(name)s);

-- name: bind
INSERT INTO pgflow_kombu.bindings (exchange, routing_key, queue, pgmq_name, pattern, arguments)
VALUES (%(exchange)s, %(routing_key)s, %(queue)s, %(pgmq_name)s, %(pattern)s,
        %(arguments)s::jsonb)
ON CONFLICT (exchange, routing_key, queue) DO NOTHING;

-- name: unbind
DELETE FROM pgflow_kombu.bindings
WHERE exchange = %(exchange)s AND routing_key = %(routing_key)s AND queue = %(queue)s;

-- name: exchange_bindings
SELECT routing_key, pattern, queue FROM pgflow_kombu.bindings WHERE exchange = %(exchange)s;

-- name: all_bindings
SELECT queue, exchange, routing_key FROM pgflow_kombu.bindings ORDER BY exchange, routing_key, queue;

-- name: listen
LISTEN {channel};

-- name: unlisten
UNLISTEN {channel};
