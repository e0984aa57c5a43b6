-- W3C trace context for sagas: the trace a saga was submitted in goes on to each step's and
-- compensation's job (and so to their AMQP messages and job events) and to the saga's own
-- event and callback, so a saga can be followed like a job.
ALTER TABLE sagas ADD COLUMN traceparent text;

-- As before (20261122000001), with the saga's trace on the job.
CREATE OR REPLACE FUNCTION conveyor_saga_enqueue(saga uuid, pos integer, compensation boolean)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE t jsonb; tenant uuid; trace text; new_id uuid := conveyor_uuid_v7();
BEGIN
  SELECT CASE WHEN compensation THEN st.compensate ELSE st.job END, s.tenant_id, s.traceparent
    INTO t, tenant, trace
    FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
    WHERE st.saga_id = saga AND st.position = pos;
  INSERT INTO jobs (id, tenant_id, type, queue, status, priority, payload, max_attempts,
                    timeout_seconds, run_at, callback_url, metadata, saga_id, traceparent)
  VALUES (new_id, tenant, t->>'type', t->>'queue', 'queued', (t->>'priority')::smallint,
          t->'payload', (t->>'max_attempts')::integer, (t->>'timeout_seconds')::integer, now(),
          t->>'callback_url', COALESCE(t->'metadata', '{}'::jsonb), saga, trace);
  INSERT INTO outbox (kind, routing_key, job_id) VALUES ('job', t->>'queue', new_id);
  IF compensation THEN
    UPDATE saga_steps SET status = 'compensating', compensation_job_id = new_id
      WHERE saga_id = saga AND position = pos;
  ELSE
    UPDATE saga_steps SET status = 'running', job_id = new_id
      WHERE saga_id = saga AND position = pos;
  END IF;
  RETURN new_id;
END $$;

-- As before (20261122000001), with the saga's trace on its event and callback.
CREATE OR REPLACE FUNCTION conveyor_saga_finish(saga uuid, final text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE s sagas; body jsonb; message uuid;
BEGIN
  UPDATE sagas SET status = final, finished_at = now(), updated_at = now()
    WHERE id = saga RETURNING * INTO s;
  IF EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = s.tenant_id AND p.enabled) THEN
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
