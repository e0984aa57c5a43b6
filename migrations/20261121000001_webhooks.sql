-- Webhooks: endpoints, events (messages), deliveries with their attempts, and job callbacks.
-- A delivery is a row with a due time; dispatchers claim due rows with SKIP LOCKED, so the
-- next attempt time, per-endpoint limits and the circuit breaker all live here, shared by
-- every dispatcher process.

-- UUIDv7 made in SQL, for rows written inside statements (events raised by state changes).
CREATE FUNCTION conveyor_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
    substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
    FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- RFC 3339 in UTC, as the API writes timestamps.
CREATE FUNCTION conveyor_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A job as the API shows it (API.md "Job"), for event and callback bodies written in SQL.
CREATE FUNCTION conveyor_job_json(j jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', j.id, 'type', j.type, 'queue', j.queue, 'status', j.status, 'priority', j.priority,
    'payload', j.payload, 'result', j.result, 'error', j.error, 'attempts', j.attempts,
    'max_attempts', j.max_attempts, 'timeout_seconds', j.timeout_seconds,
    'run_at', conveyor_ts(j.run_at), 'created_at', conveyor_ts(j.created_at),
    'started_at', conveyor_ts(j.started_at), 'finished_at', conveyor_ts(j.finished_at),
    'callback_url', j.callback_url, 'saga_id', j.saga_id, 'metadata', j.metadata)
$$;

-- Each tenant signs its job callbacks with its own secret (32 random bytes: two v4 UUIDs'
-- worth of pg_strong_random). Rotation keeps the previous one signing for a while.
ALTER TABLE tenants
  ADD COLUMN callback_secret text NOT NULL DEFAULT ('whsec_' || encode(decode(
    replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'), 'base64')),
  ADD COLUMN callback_previous_secret text,
  ADD COLUMN callback_previous_expires_at timestamptz;

CREATE TABLE endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                         text NOT NULL,
    description                 text NOT NULL DEFAULT '',
    event_types                 text[] NOT NULL DEFAULT '{}',  -- empty: every event type
    enabled                     boolean NOT NULL DEFAULT true,
    disabled_reason             text,
    -- Secrets sign, so they are kept (not hashed); they never leave except on create/rotate.
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    -- A token bucket shared by every dispatcher (NULL rate: unlimited).
    rate_limit_per_second       integer CHECK (rate_limit_per_second > 0),
    rate_tokens                 double precision NOT NULL DEFAULT 0,
    rate_refilled_at            timestamptz NOT NULL DEFAULT now(),
    -- Health: the circuit opens after consecutive failures; failing for long disables.
    consecutive_failures        integer NOT NULL DEFAULT 0,
    failing_since               timestamptz,
    circuit_open_until          timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id DESC);
-- The few endpoints a claim must look at before taking their deliveries.
CREATE INDEX endpoints_restricted ON endpoints (id)
    WHERE rate_limit_per_second IS NOT NULL OR consecutive_failures > 0 OR NOT enabled;

-- An event, with the exact bytes every endpoint receives: signing and sending use this text
-- as it is, so nothing is re-serialised in between.
CREATE TABLE messages (
    id          uuid PRIMARY KEY,                -- the `webhook-id` receivers deduplicate on
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_type  text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_tenant ON messages (tenant_id, id DESC);

CREATE TABLE deliveries (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    message_id        uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    kind              text NOT NULL CHECK (kind IN ('webhook', 'callback')),
    endpoint_id       uuid REFERENCES endpoints(id) ON DELETE CASCADE,
    url               text,             -- a callback's URL; webhooks use their endpoint's
    -- `parked`: due, but its endpoint had no room (busy, rate-limited, circuit open) when a
    -- claim came across it. Parked rows wait in their endpoint's own queue, out of the
    -- time-ordered one, so a large backlog for one endpoint costs the others nothing.
    status            text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'parked', 'delivering', 'succeeded', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer,          -- NULL: the retry schedule's length
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CHECK ((kind = 'webhook' AND endpoint_id IS NOT NULL) OR (kind = 'callback' AND url IS NOT NULL))
);
-- One time-ordered queue per lane, so neither lane's claims walk over the other's backlog.
CREATE INDEX deliveries_due_first ON deliveries (next_attempt_at) WHERE status = 'pending' AND attempts = 0;
CREATE INDEX deliveries_due_retry ON deliveries (next_attempt_at) WHERE status = 'pending' AND attempts > 0;
CREATE INDEX deliveries_parked ON deliveries (endpoint_id, next_attempt_at) WHERE status = 'parked';
CREATE INDEX deliveries_in_flight ON deliveries (endpoint_id) WHERE status = 'delivering';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id DESC);
CREATE INDEX deliveries_message ON deliveries (message_id);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id DESC);
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

CREATE TABLE delivery_attempts (
    delivery_id  uuid NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    latency_ms   integer,
    response     text,                  -- the start of the response body
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Makes the deliveries of stored messages: one to each enabled endpoint of the message's
-- tenant that subscribes to its type. Returns how many, and wakes the dispatchers.
CREATE FUNCTION conveyor_fan_out(message_ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE made integer;
BEGIN
  WITH d AS (
    INSERT INTO deliveries (id, tenant_id, message_id, kind, endpoint_id)
    SELECT conveyor_uuid_v7(), m.tenant_id, m.id, 'webhook', p.id
    FROM messages m JOIN endpoints p ON p.tenant_id = m.tenant_id AND p.enabled
                                     AND (p.event_types = '{}' OR m.event_type = ANY (p.event_types))
    WHERE m.id = ANY (message_ids)
    RETURNING 1)
  SELECT count(*) INTO made FROM d;
  IF made > 0 THEN
    PERFORM pg_notify('conveyor_deliveries', '');
  END IF;
  RETURN made;
END $$;

-- Raises Conveyor's own events: a message for each event some endpoint of its tenant
-- subscribes to (an event nobody subscribes to writes nothing), fanned out.
CREATE FUNCTION conveyor_raise_events(tenant_ids uuid[], types text[], datas jsonb[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
  WITH m AS (
    INSERT INTO messages (id, tenant_id, event_type, body)
    SELECT conveyor_uuid_v7(), e.tenant_id, e.type,
           jsonb_build_object('type', e.type, 'timestamp', conveyor_ts(now()), 'data', e.data)::text
    FROM unnest(tenant_ids, types, datas) AS e(tenant_id, type, data)
    WHERE EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = e.tenant_id AND p.enabled
                    AND (p.event_types = '{}' OR e.type = ANY (p.event_types)))
    RETURNING id)
  SELECT array_agg(id) INTO ids FROM m;
  RETURN conveyor_fan_out(ids);
END $$;

-- For jobs that just became terminal: raises job.<status>, and queues the callback of each
-- job that has a callback_url. Called in the transaction that finished them.
CREATE FUNCTION conveyor_jobs_finished(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE made integer; callbacks integer;
BEGIN
  SELECT conveyor_raise_events(array_agg(j.tenant_id), array_agg('job.' || j.status),
                               array_agg(conveyor_job_json(j)))
    INTO made
    FROM jobs j
    WHERE j.id = ANY (ids) AND j.status IN ('succeeded', 'dead', 'cancelled')
      AND EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = j.tenant_id AND p.enabled);
  WITH c AS (
    SELECT conveyor_uuid_v7() AS message_id, j.tenant_id, j.status, j.callback_url,
           conveyor_job_json(j)::text AS body
    FROM jobs j
    WHERE j.id = ANY (ids) AND j.callback_url IS NOT NULL
      AND j.status IN ('succeeded', 'dead', 'cancelled')),
  m AS (
    INSERT INTO messages (id, tenant_id, event_type, body)
    SELECT message_id, tenant_id, 'job.' || status, body FROM c),
  d AS (
    INSERT INTO deliveries (id, tenant_id, message_id, kind, url)
    SELECT conveyor_uuid_v7(), tenant_id, message_id, 'callback', callback_url FROM c
    RETURNING 1)
  SELECT count(*) INTO callbacks FROM d;
  IF callbacks > 0 THEN
    PERFORM pg_notify('conveyor_deliveries', '');
  END IF;
  RETURN COALESCE(made, 0) + callbacks;
END $$;
