-- W3C trace context: the `traceparent` a job was submitted with (or one made for it) travels
-- with its AMQP messages and on to the webhooks and callback its end raises, so one job can
-- be followed from intake to callback.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE messages ADD COLUMN traceparent text;

-- Raising events, each with the trace it belongs to (NULL: none).
CREATE FUNCTION conveyor_raise_events(tenant_ids uuid[], types text[], datas jsonb[],
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
    WHERE EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = e.tenant_id AND p.enabled
                    AND (p.event_types = '{}' OR e.type = ANY (p.event_types)))
    RETURNING id)
  SELECT array_agg(id) INTO ids FROM m;
  RETURN conveyor_fan_out(ids);
END $$;

-- Events raised outside a job (endpoint and saga events) carry no trace.
CREATE OR REPLACE FUNCTION conveyor_raise_events(tenant_ids uuid[], types text[], datas jsonb[])
RETURNS integer LANGUAGE sql AS $$
  SELECT conveyor_raise_events(tenant_ids, types, datas,
                               array_fill(NULL::text, ARRAY[cardinality(tenant_ids)]))
$$;

-- As before (20261121000001), with the job's trace on its event messages and its callback.
CREATE OR REPLACE FUNCTION conveyor_jobs_finished(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE made integer; callbacks integer;
BEGIN
  SELECT conveyor_raise_events(array_agg(j.tenant_id), array_agg('job.' || j.status),
                               array_agg(conveyor_job_json(j)), array_agg(j.traceparent))
    INTO made
    FROM jobs j
    WHERE j.id = ANY (ids) AND j.status IN ('succeeded', 'dead', 'cancelled')
      AND EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = j.tenant_id AND p.enabled);
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
