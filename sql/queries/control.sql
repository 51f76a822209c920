-- Queries of run control (pgflow_kombu.client.control and the worker's retention): cancel,
-- retry, delete and prune runs (and idle rate buckets); the cancelled runs among those a worker
-- holds.

-- name: cancel_run
SELECT pgflow_kombu.cancel_run(%(run_id)s::uuid, %(reason)s::text);

-- name: retry_run
SELECT pgflow_kombu.retry_run(%(run_id)s::uuid);

-- name: delete_run
SELECT pgflow_kombu.delete_run(%(run_id)s::uuid);

-- name: prune_runs
SELECT pgflow_kombu.prune_runs(make_interval(secs => %(older_than)s), %(batch_size)s);

-- name: prune_archives
SELECT pgflow_kombu.prune_archives(make_interval(secs => %(older_than)s), %(batch_size)s);

-- name: prune_rate_buckets
-- Rate-limit buckets full again (a missing bucket admits as a full one); older_than unused.
SELECT pgflow_kombu.prune_rate_buckets(%(batch_size)s);

-- name: cancelled_among
SELECT run_id::text FROM pgflow_kombu.cancelled_runs WHERE run_id = ANY (%(run_ids)s::uuid[]);

-- name: try_retention_lock
-- One pruning worker at a time: a session lock, held for one round of batches.
SELECT pg_try_advisory_lock(hashtext('pgflow_kombu.retention'));

-- name: release_retention_lock
SELECT pg_advisory_unlock(hashtext('pgflow_kombu.retention'));
