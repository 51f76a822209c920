-- Schedules (cron) and deduplication (idempotency keys) of pgflow-kombu (schema pgflow_kombu).
-- pgflow's tables are left as they are: a TypeScript worker or client only ever sees the runs
-- these start. Cron expressions are evaluated by the workers (croniter); the database holds each
-- schedule's next tick time and the ticks that were started, so that every worker sees the same
-- schedules and a tick is started once however many workers run.

CREATE SCHEMA IF NOT EXISTS pgflow_kombu;

-- A key a run was started with: a second start of the same flow with the same key returns this
-- run instead. The key is reserved before the run exists (hence the deferred foreign key) so that
-- a concurrent start waits on the reservation; it lives as long as its run (deleting or pruning
-- the run frees the key) or until expires_at when a time to live was given.
CREATE TABLE IF NOT EXISTS pgflow_kombu.idempotency_keys (
    flow_slug text NOT NULL,
    key text NOT NULL,
    run_id uuid NOT NULL REFERENCES pgflow.runs (run_id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (flow_slug, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_run_id ON pgflow_kombu.idempotency_keys (run_id);

-- Reserve key for a run of flow_slug. Returns the run the key belongs to and whether it is new
-- (the caller then starts that run in the same transaction). A start holding the key in an open
-- transaction makes a concurrent one wait here until it commits (then its run is returned) or
-- rolls back (then this one takes the key). An expired key is replaced.
CREATE OR REPLACE FUNCTION pgflow_kombu.reserve_idempotency_key(
    flow_slug text,
    key text,
    run_id uuid DEFAULT NULL,
    ttl_seconds double precision DEFAULT NULL,
    OUT key_run_id uuid,
    OUT created boolean
)
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    wanted uuid := coalesce(reserve_idempotency_key.run_id, gen_random_uuid());
    expiry timestamptz;
BEGIN
    IF key IS NULL OR key = '' THEN
        RAISE EXCEPTION 'an idempotency key must be a non-empty string';
    END IF;
    LOOP
        INSERT INTO pgflow_kombu.idempotency_keys AS k (flow_slug, key, run_id, expires_at)
        VALUES (reserve_idempotency_key.flow_slug, reserve_idempotency_key.key, wanted,
                now() + make_interval(secs => ttl_seconds))
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING
        RETURNING k.run_id INTO key_run_id;
        IF FOUND THEN
            created := true;
            RETURN;
        END IF;
        -- Taken by a committed start (ON CONFLICT waited for an open one to finish).
        SELECT k.run_id, k.expires_at INTO key_run_id, expiry
        FROM pgflow_kombu.idempotency_keys AS k
        WHERE k.flow_slug = reserve_idempotency_key.flow_slug
          AND k.key = reserve_idempotency_key.key
        FOR UPDATE;
        IF FOUND THEN
            IF expiry IS NULL OR expiry > now() THEN
                created := false;
                RETURN;
            END IF;
            DELETE FROM pgflow_kombu.idempotency_keys AS k
            WHERE k.flow_slug = reserve_idempotency_key.flow_slug
              AND k.key = reserve_idempotency_key.key;
        END IF;
        -- Deleted meanwhile (expired, or its run was removed): try again.
    END LOOP;
END;
$$;

-- A schedule: start a run of flow_slug with input at every tick of cron in timezone.
-- source 'code' schedules are written by workers from the flows they serve (and disabled, not
-- deleted, when the code no longer defines them: removed_at); 'api' ones by the client.
CREATE TABLE IF NOT EXISTS pgflow_kombu.schedules (
    name text PRIMARY KEY,
    flow_slug text NOT NULL,
    cron text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC',
    input jsonb NOT NULL DEFAULT '{}'::jsonb,
    catch_up text NOT NULL DEFAULT 'none' CHECK (catch_up IN ('none', 'latest', 'all')),
    catch_up_limit integer NOT NULL DEFAULT 100 CHECK (catch_up_limit >= 1),
    misfire_grace double precision NOT NULL DEFAULT 30 CHECK (misfire_grace >= 0),
    source text NOT NULL DEFAULT 'api' CHECK (source IN ('code', 'api')),
    paused boolean NOT NULL DEFAULT false,
    removed_at timestamptz,
    next_tick_at timestamptz NOT NULL,
    last_tick_at timestamptz,
    last_run_id uuid,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS schedules_due ON pgflow_kombu.schedules (next_tick_at)
    WHERE NOT paused AND removed_at IS NULL;

-- The ticks that were started: one row per (schedule, tick time), so no tick starts twice. A
-- manual trigger is a tick at the time it was asked for. The run may be pruned; the tick stays
-- (the newest ones per schedule are kept, see the scheduler's trim).
CREATE TABLE IF NOT EXISTS pgflow_kombu.schedule_ticks (
    schedule_name text NOT NULL REFERENCES pgflow_kombu.schedules (name) ON DELETE CASCADE,
    tick_at timestamptz NOT NULL,
    manual boolean NOT NULL DEFAULT false,
    run_id uuid REFERENCES pgflow.runs (run_id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_name, tick_at)
);
CREATE INDEX IF NOT EXISTS schedule_ticks_run_id ON pgflow_kombu.schedule_ticks (run_id);

-- Start the run of one tick: record the tick and start the flow, in the caller's transaction.
-- Returns the new run's id, or NULL when this tick was already started. The tick's
-- idempotency key ('schedule:<name>:<tick time>') keeps its run unique even after its tick row
-- was trimmed.
CREATE OR REPLACE FUNCTION pgflow_kombu.start_schedule_tick(
    schedule_name text,
    tick_at timestamptz,
    manual boolean DEFAULT false
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    s pgflow_kombu.schedules%ROWTYPE;
    reserved record;
    new_run_id uuid;
BEGIN
    SELECT * INTO s FROM pgflow_kombu.schedules AS x WHERE x.name = schedule_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no schedule named %', schedule_name;
    END IF;
    INSERT INTO pgflow_kombu.schedule_ticks AS t (schedule_name, tick_at, manual)
    VALUES (s.name, start_schedule_tick.tick_at, start_schedule_tick.manual)
    ON CONFLICT ON CONSTRAINT schedule_ticks_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO reserved FROM pgflow_kombu.reserve_idempotency_key(
        s.flow_slug,
        'schedule:' || s.name || ':'
            || to_char(start_schedule_tick.tick_at AT TIME ZONE 'UTC',
                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
    IF reserved.created THEN
        SELECT r.run_id INTO new_run_id
        FROM pgflow.start_flow(flow_slug => s.flow_slug, input => s.input,
                               run_id => reserved.key_run_id) AS r;
    ELSE
        new_run_id := NULL;  -- started before (its tick row was trimmed): not again
    END IF;
    UPDATE pgflow_kombu.schedule_ticks AS t SET run_id = reserved.key_run_id
    WHERE t.schedule_name = s.name AND t.tick_at = start_schedule_tick.tick_at;
    UPDATE pgflow_kombu.schedules AS x
    SET last_tick_at = greatest(x.last_tick_at, start_schedule_tick.tick_at),
        last_run_id = coalesce(new_run_id, x.last_run_id), last_error = NULL
    WHERE x.name = s.name;
    RETURN new_run_id;
END;
$$;
