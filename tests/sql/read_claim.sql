-- Queries used only by the read-and-claim tests (tests/integration/test_read_claim*.py).

-- name: read_claim_messages
-- Every live message of a queue table (placeholder): read count and seconds until visible.
SELECT msg_id, read_ct, extract(epoch FROM vt - clock_timestamp())::float8 AS visible_in
FROM pgmq.{} ORDER BY msg_id;

-- name: read_claim_tasks_of_flow
SELECT run_id::text, step_slug, task_index, status, attempts_count, last_worker_id::text,
       started_at IS NOT NULL AS has_started_at, message_id
FROM pgflow.step_tasks WHERE flow_slug = %(flow_slug)s
ORDER BY message_id;

-- name: read_claim_call
-- The call with arguments given as they are (NULLs included), for the bad-input tests.
SELECT * FROM pgflow_kombu.read_and_claim(
    flow_slugs => %(flow_slugs)s::text[], worker_ids => %(worker_ids)s::uuid[],
    qty => %(qty)s::int, read_visibility => %(read_visibility)s::int);
