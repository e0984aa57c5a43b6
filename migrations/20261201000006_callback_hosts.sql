-- Job and saga callbacks go through the same per-host limits as webhooks: concurrency across
-- every dispatcher, a rate limit, a circuit breaker. Before, a callback had no endpoint, so
-- 300 slow callbacks held 300 connections to one host (an endpoint may hold 32) and every
-- dispatcher slot with them, delaying every other tenant's webhooks.
--
-- A callback's delivery now points at an endpoint row of kind `callback`, one per tenant and
-- origin (scheme, host, port: the limits a receiving host would want), made on first use by
-- a trigger, so every way a callback is queued (a job's end, a saga's end) gets one. These
-- rows are Conveyor's own: the API never lists or changes them (it works on the view
-- `webhook_endpoints`), no event fans out to them, and failing never disables them (a
-- callback URL is chosen per job; the circuit breaker is enough).
ALTER TABLE endpoints
  ADD COLUMN kind text NOT NULL DEFAULT 'webhook' CHECK (kind IN ('webhook', 'callback'));
CREATE UNIQUE INDEX endpoints_callback_origin ON endpoints (tenant_id, url) WHERE kind = 'callback';

-- (`SELECT *` is expanded when the view is made: a column added to endpoints later needs the
-- view made again.)
CREATE VIEW webhook_endpoints AS SELECT * FROM endpoints WHERE kind = 'webhook';

-- `https://user:pw@Example.com:8443/cb?x=1` → `https://example.com:8443`. The API stores
-- callback URLs as the URL library writes them (host lowercased, default port dropped, an
-- `@` in userinfo escaped), so one host has one origin. A URL stored before that, in a form
-- this cannot read, is an origin of its own: never NULL, which would fail the transaction
-- that finishes the job.
CREATE FUNCTION conveyor_origin(url text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT COALESCE(
    lower(regexp_replace(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*'),
                         '^([^:]+://)[^@/]*@', '\1')),
    'unreadable:' || md5(url))
$$;

CREATE FUNCTION conveyor_callback_endpoint() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE origin text := conveyor_origin(NEW.url);
BEGIN
  SELECT id INTO NEW.endpoint_id FROM endpoints
    WHERE tenant_id = NEW.tenant_id AND kind = 'callback' AND url = origin;
  IF NEW.endpoint_id IS NULL THEN
    INSERT INTO endpoints (id, tenant_id, url, kind, secret, description)
      VALUES (conveyor_uuid_v7(), NEW.tenant_id, origin, 'callback', '', 'job and saga callbacks')
      ON CONFLICT (tenant_id, url) WHERE kind = 'callback' DO UPDATE SET kind = EXCLUDED.kind
      RETURNING id INTO NEW.endpoint_id;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER deliveries_callback_endpoint BEFORE INSERT ON deliveries
  FOR EACH ROW WHEN (NEW.kind = 'callback' AND NEW.endpoint_id IS NULL)
  EXECUTE FUNCTION conveyor_callback_endpoint();

-- Callbacks still to be sent get theirs (finished ones are never claimed again; one resent
-- later is claimed without per-host limits, as before).
INSERT INTO endpoints (id, tenant_id, url, kind, secret, description)
  SELECT conveyor_uuid_v7(), tenant_id, origin, 'callback', '', 'job and saga callbacks'
  FROM (SELECT DISTINCT tenant_id, conveyor_origin(url) AS origin FROM deliveries
        WHERE kind = 'callback' AND endpoint_id IS NULL
          AND status IN ('pending', 'parked', 'delivering')) c
  ON CONFLICT DO NOTHING;
UPDATE deliveries d SET endpoint_id = e.id
  FROM endpoints e
  WHERE d.kind = 'callback' AND d.endpoint_id IS NULL
    AND d.status IN ('pending', 'parked', 'delivering')
    AND e.kind = 'callback' AND e.tenant_id = d.tenant_id AND e.url = conveyor_origin(d.url);

-- As before (20261122000003), fanning out to webhook endpoints only.
CREATE OR REPLACE FUNCTION conveyor_fan_out(message_ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE made integer;
BEGIN
  IF message_ids IS NULL OR cardinality(message_ids) = 0 THEN
    RETURN 0;
  END IF;
  WITH d AS (
    INSERT INTO deliveries (id, tenant_id, message_id, kind, endpoint_id)
    SELECT conveyor_uuid_v7(), m.tenant_id, m.id, 'webhook', p.id
    FROM messages m JOIN webhook_endpoints p ON p.tenant_id = m.tenant_id AND p.enabled
                                   AND (p.event_types = '{}' OR m.event_type = ANY (p.event_types))
    WHERE m.id = ANY (message_ids)
    RETURNING 1)
  SELECT count(*) INTO made FROM d;
  IF made > 0 THEN
    PERFORM pg_notify('conveyor_deliveries', '');
  END IF;
  RETURN made;
END $$;

-- As before (20261122000006), looking at webhook endpoints only.
CREATE OR REPLACE FUNCTION conveyor_raise_events(tenant_ids uuid[], types text[], datas jsonb[],
                                                 traceparents text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
  WITH m AS (
    INSERT INTO messages (id, tenant_id, event_type, body, traceparent)
    SELECT conveyor_uuid_v7(), e.tenant_id, e.type,
           jsonb_build_object('type', e.type, 'timestamp', conveyor_ts(now()), 'data', e.data)::text,
           e.traceparent
    FROM unnest(tenant_ids, types, datas, traceparents) AS e(tenant_id, type, data, traceparent)
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints p WHERE p.tenant_id = e.tenant_id AND p.enabled
                    AND (p.event_types = '{}' OR e.type = ANY (p.event_types)))
    RETURNING id)
  SELECT array_agg(id) INTO ids FROM m;
  RETURN conveyor_fan_out(ids);
END $$;

-- As before (20261122000006), looking at webhook endpoints only.
CREATE OR REPLACE FUNCTION conveyor_jobs_finished(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE made integer; callbacks integer;
BEGIN
  SELECT conveyor_raise_events(array_agg(j.tenant_id), array_agg('job.' || j.status),
                               array_agg(conveyor_job_json(j)), array_agg(j.traceparent))
    INTO made
    FROM jobs j
    WHERE j.id = ANY (ids) AND j.status IN ('succeeded', 'dead', 'cancelled')
      AND EXISTS (SELECT 1 FROM webhook_endpoints p WHERE p.tenant_id = j.tenant_id AND p.enabled);
  WITH c AS (
    SELECT conveyor_uuid_v7() AS message_id, j.tenant_id, j.status, j.callback_url,
           conveyor_job_json(j)::text AS body, j.traceparent
    FROM jobs j
    WHERE j.id = ANY (ids) AND j.callback_url IS NOT NULL
      AND j.status IN ('succeeded', 'dead', 'cancelled')),
  m AS (
    INSERT INTO messages (id, tenant_id, event_type, body, traceparent)
    SELECT message_id, tenant_id, 'job.' || status, body, traceparent FROM c),
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

-- As before (20261122000008), looking at webhook endpoints only.
CREATE OR REPLACE FUNCTION conveyor_saga_finish(saga uuid, final text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE s sagas; body jsonb; message uuid;
BEGIN
  UPDATE sagas SET status = final, finished_at = now(), updated_at = now()
    WHERE id = saga RETURNING * INTO s;
  IF EXISTS (SELECT 1 FROM webhook_endpoints p WHERE p.tenant_id = s.tenant_id AND p.enabled) THEN
    body := conveyor_saga_json(s);
    PERFORM conveyor_raise_events(ARRAY[s.tenant_id], ARRAY['saga.' || final], ARRAY[body],
                                  ARRAY[s.traceparent]);
  END IF;
  IF s.callback_url IS NOT NULL THEN
    body := COALESCE(body, conveyor_saga_json(s));
    message := conveyor_uuid_v7();
    INSERT INTO messages (id, tenant_id, event_type, body, traceparent)
      VALUES (message, s.tenant_id, 'saga.' || final, body::text, s.traceparent);
    INSERT INTO deliveries (id, tenant_id, message_id, kind, url)
      VALUES (conveyor_uuid_v7(), s.tenant_id, message, 'callback', s.callback_url);
    PERFORM pg_notify('conveyor_deliveries', '');
  END IF;
END $$;
