-- Queries of the worker (pgflow_kombu.worker): its pgflow.workers rows, claims, reports,
-- releases, heartbeats and stalled-task recovery.

-- name: register
-- One row per served queue; the same ids are inserted again if a row disappeared. The ids are
-- also listed in pgflow_kombu.known_workers: workers that heartbeat while they work, whose tasks
-- recovery may requeue as soon as their heartbeat is stale.
WITH known AS (
    INSERT INTO pgflow_kombu.known_workers (worker_id)
    SELECT unnest(%(worker_ids)s::uuid[])
    ON CONFLICT (worker_id) DO NOTHING
)
INSERT INTO pgflow.workers (worker_id, queue_name, function_name)
SELECT w.worker_id, w.queue_name, %(function_name)s
FROM unnest(%(worker_ids)s::uuid[], %(queue_names)s::text[]) AS w(worker_id, queue_name)
ON CONFLICT (worker_id) DO UPDATE SET last_heartbeat_at = now();

-- name: heartbeat
-- Returns the rows still there with whether they were deprecated (stop taking work).
UPDATE pgflow.workers AS w
SET last_heartbeat_at = now()
WHERE w.worker_id = ANY(%(worker_ids)s::uuid[])
RETURNING w.worker_id, w.queue_name, w.deprecated_at IS NOT NULL AS deprecated;

-- name: claim_tasks
SELECT run_id, step_slug, task_index, msg_id, input, attempt, timeout
FROM pgflow_kombu.claim_tasks(
    flow_slug => %(flow_slug)s, msg_ids => %(msg_ids)s::bigint[], worker_id => %(worker_id)s::uuid,
    read_visibility => %(read_visibility)s::int);

-- name: report_tasks
SELECT ordinal, outcome, detail, retrying, run_status
FROM pgflow_kombu.report_tasks(reports => %(reports)s::jsonb);

-- name: release_tasks
SELECT pgflow_kombu.release_tasks(tasks => %(tasks)s::jsonb);

-- name: recover_stalled_tasks
SELECT pgflow_kombu.recover_stalled_tasks(
    heartbeat_timeout => make_interval(secs => %(stalled_after)s::float8));

-- name: held_tasks
-- Tasks started by these worker rows, to find claims whose result never reached us.
SELECT run_id, step_slug, task_index, attempts_count, last_worker_id
FROM pgflow.step_tasks
WHERE last_worker_id = ANY(%(worker_ids)s::uuid[]) AND status = 'started';

-- name: read_messages
-- The direct (non-kombu) message source: read up to qty messages, hidden for vt seconds.
SELECT msg_id FROM pgmq.read(queue_name => %(queue_name)s, vt => %(vt)s, qty => %(qty)s);

-- name: read_and_claim
-- Read up to qty messages of the flow queues and claim their tasks, in one statement (the
-- default message source; see 0095_read_claim.sql).
SELECT flow_slug, run_id, step_slug, task_index, msg_id, input, attempt, timeout
FROM pgflow_kombu.read_and_claim(
    flow_slugs => %(flow_slugs)s::text[], worker_ids => %(worker_ids)s::uuid[],
    qty => %(qty)s::int, read_visibility => %(read_visibility)s::int);

-- name: ensure_flow_queues
-- The wake-up trigger and the delivery-order index on each flow queue (see 0010_transport.sql).
SELECT pgflow_kombu.ensure_queue(q) FROM unnest(%(queues)s::text[]) AS q;
