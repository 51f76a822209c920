-- Queries of tests/integration/test_queue_statements.py.

-- name: qs_create_flow
SELECT flow_slug FROM pgflow.create_flow(flow_slug => %(slug)s);

-- name: qs_send
SELECT pgflow_kombu.queue_send(%(queue)s, %(messages)s::jsonb[], %(delays)s::integer[]) AS ids;

-- name: qs_archive
SELECT pgflow_kombu.queue_archive(%(queue)s, %(ids)s::bigint[]);

-- name: qs_static_queues
-- The queue names queue_send, queue_archive and queue_set_vt hold a static statement for.
SELECT (SELECT array_agg(m[1] ORDER BY m[1])
        FROM regexp_matches(pg_get_functiondef('pgflow_kombu.queue_send'::regproc),
                            'IF queue = ''([^'']+)'' THEN', 'g') AS m) AS send,
       (SELECT array_agg(m[1] ORDER BY m[1])
        FROM regexp_matches(pg_get_functiondef('pgflow_kombu.queue_archive'::regproc),
                            'IF queue = ''([^'']+)'' THEN', 'g') AS m) AS archive,
       (SELECT array_agg(m[1] ORDER BY m[1])
        FROM regexp_matches(pg_get_functiondef('pgflow_kombu.queue_set_vt'::regproc),
                            'IF queue = ''([^'']+)'' THEN', 'g') AS m) AS set_vt;

-- name: qs_set_vt
SELECT pgflow_kombu.queue_set_vt(%(queue)s, %(ids)s::bigint[], %(offsets)s::integer[]);
