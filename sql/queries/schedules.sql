-- Queries of schedules (pgflow_kombu.client.schedules, pgflow_kombu.worker.scheduler).

-- name: db_now
SELECT now();

-- name: clock_now
SELECT clock_timestamp();

-- name: upsert_schedule
-- A schedule as code or the client defines it. A changed cron or time zone, or a schedule that
-- was disabled (removed from code), starts again from next_tick_at; otherwise the stored next
-- tick stays (a restarting worker neither skips nor repeats a tick). A pause is kept.
INSERT INTO pgflow_kombu.schedules AS s (
    name, flow_slug, cron, timezone, input, catch_up, catch_up_limit, misfire_grace, source,
    next_tick_at)
VALUES (
    %(name)s, %(flow_slug)s, %(cron)s, %(timezone)s, %(input)s::jsonb, %(catch_up)s,
    %(catch_up_limit)s, %(misfire_grace)s, %(source)s, %(next_tick_at)s)
ON CONFLICT (name) DO UPDATE SET
    flow_slug = excluded.flow_slug,
    cron = excluded.cron,
    timezone = excluded.timezone,
    input = excluded.input,
    catch_up = excluded.catch_up,
    catch_up_limit = excluded.catch_up_limit,
    misfire_grace = excluded.misfire_grace,
    source = excluded.source,
    next_tick_at = CASE
        WHEN s.cron IS DISTINCT FROM excluded.cron OR s.timezone IS DISTINCT FROM excluded.timezone
             OR s.removed_at IS NOT NULL
        THEN excluded.next_tick_at ELSE s.next_tick_at END,
    removed_at = NULL,
    updated_at = now()
WHERE (s.flow_slug, s.cron, s.timezone, s.input, s.catch_up, s.catch_up_limit, s.misfire_grace,
       s.source, s.removed_at)
      IS DISTINCT FROM (excluded.flow_slug, excluded.cron, excluded.timezone, excluded.input,
       excluded.catch_up, excluded.catch_up_limit, excluded.misfire_grace, excluded.source, NULL);

-- name: disable_removed_schedules
-- Code schedules of these flows that the code no longer defines: disabled (kept, with their
-- ticks and pause state), not deleted.
UPDATE pgflow_kombu.schedules AS s SET removed_at = now(), updated_at = now()
WHERE s.source = 'code' AND s.removed_at IS NULL
  AND s.flow_slug = ANY(%(flow_slugs)s::text[]) AND NOT (s.name = ANY(%(names)s::text[]))
RETURNING s.name;

-- name: lock_due_schedule
-- One due schedule, locked until the transaction ends; schedules other workers are firing are
-- skipped. A schedule whose flow is not in the database (yet) is not due.
SELECT s.name, s.flow_slug, s.cron, s.timezone, s.catch_up, s.catch_up_limit, s.misfire_grace,
       s.next_tick_at, now() AS now
FROM pgflow_kombu.schedules AS s
WHERE s.next_tick_at <= now() AND NOT s.paused AND s.removed_at IS NULL
  AND EXISTS (SELECT 1 FROM pgflow.flows AS f WHERE f.flow_slug = s.flow_slug)
ORDER BY s.next_tick_at
LIMIT 1
FOR UPDATE OF s SKIP LOCKED;

-- name: seconds_to_next_tick
SELECT extract(epoch FROM min(s.next_tick_at) - clock_timestamp())::float8
FROM pgflow_kombu.schedules AS s
WHERE NOT s.paused AND s.removed_at IS NULL;

-- name: start_tick
SELECT pgflow_kombu.start_schedule_tick(%(name)s, %(tick_at)s, %(manual)s);

-- name: advance_schedule
UPDATE pgflow_kombu.schedules
SET next_tick_at = %(next_tick_at)s, last_error = coalesce(%(error)s, last_error)
WHERE name = %(name)s;

-- name: trim_ticks
-- Keep the newest ticks of a schedule; older rows are history only (the schedule's lock and
-- next_tick_at are what start each tick once).
DELETE FROM pgflow_kombu.schedule_ticks AS t
WHERE t.schedule_name = %(name)s AND t.tick_at < (
    SELECT k.tick_at FROM pgflow_kombu.schedule_ticks AS k
    WHERE k.schedule_name = %(name)s
    ORDER BY k.tick_at DESC OFFSET %(keep)s - 1 LIMIT 1);

-- name: list_schedules
SELECT * FROM pgflow_kombu.schedules
WHERE %(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s
ORDER BY name;

-- name: get_schedule
SELECT * FROM pgflow_kombu.schedules WHERE name = %(name)s;

-- name: lock_schedule
SELECT * FROM pgflow_kombu.schedules WHERE name = %(name)s FOR UPDATE;

-- name: pause_schedule
UPDATE pgflow_kombu.schedules SET paused = true, updated_at = now()
WHERE name = %(name)s
RETURNING name;

-- name: resume_schedule
-- Ticks that fell in the pause are not caught up: the schedule starts again at its next tick.
UPDATE pgflow_kombu.schedules
SET paused = false, next_tick_at = %(next_tick_at)s, updated_at = now()
WHERE name = %(name)s AND paused;

-- name: delete_schedule
DELETE FROM pgflow_kombu.schedules WHERE name = %(name)s RETURNING name;

-- name: list_ticks
SELECT schedule_name, tick_at, manual, run_id, started_at
FROM pgflow_kombu.schedule_ticks
WHERE schedule_name = %(name)s
ORDER BY tick_at DESC
LIMIT %(limit)s;
