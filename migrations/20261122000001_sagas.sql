-- Sagas: ordered steps, each run as a job, with compensations run in reverse when a step dies.
-- Every transition happens in SQL, inside the transaction that made a step's job terminal
-- (the store's `raise_finished` calls `conveyor_sagas_advance`): the saga's state can never
-- disagree with its jobs', whichever path ended the job (a worker's outcome, a rescue of a
-- lost worker's lease, a cancel).

CREATE TABLE sagas (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name             text NOT NULL DEFAULT '',
    status           text NOT NULL DEFAULT 'running' CHECK (status IN
                       ('running', 'completed', 'compensating', 'compensated', 'failed')),
    callback_url     text,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX sagas_tenant ON sagas (tenant_id, id DESC);
CREATE UNIQUE INDEX sagas_idempotency ON sagas (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE saga_steps (
    saga_id              uuid NOT NULL REFERENCES sagas(id) ON DELETE CASCADE,
    position             integer NOT NULL,
    name                 text NOT NULL,
    status               text NOT NULL DEFAULT 'pending' CHECK (status IN
                           ('pending', 'running', 'succeeded', 'dead', 'compensating',
                            'compensated', 'compensation_failed')),
    job                  jsonb NOT NULL,     -- a validated job template (JobTemplate)
    compensate           jsonb,              -- the same, for the step's undo
    job_id               uuid,
    compensation_job_id  uuid,
    result               jsonb,              -- the step's job's result, once it succeeded
    error                text,               -- why its job or its compensation died
    PRIMARY KEY (saga_id, position),
    UNIQUE (saga_id, name)
);

-- A saga as the API shows it (API.md "Sagas"), for reads, events and callbacks alike.
-- (PL/pgSQL rather than SQL here and below: its statements' plans are cached per session,
-- where a non-inlinable SQL function is planned again at every call.)
CREATE FUNCTION conveyor_saga_json(s sagas) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN jsonb_build_object(
    'id', s.id, 'name', s.name, 'status', s.status, 'callback_url', s.callback_url,
    'created_at', conveyor_ts(s.created_at), 'updated_at', conveyor_ts(s.updated_at),
    'finished_at', conveyor_ts(s.finished_at),
    'steps', COALESCE((
      SELECT jsonb_agg(jsonb_build_object(
               'name', st.name, 'status', st.status, 'job_id', st.job_id,
               'compensation_job_id', st.compensation_job_id, 'result', st.result,
               'error', st.error) ORDER BY st.position)
      FROM saga_steps st WHERE st.saga_id = s.id), '[]'::jsonb));
END $$;

-- What a step's handler sees of its saga: the results of the steps before it (for a
-- compensation, also the result of the step it undoes).
CREATE FUNCTION conveyor_saga_context(for_job uuid, of_saga uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE me record;
BEGIN
  SELECT position, name, compensation_job_id IS NOT DISTINCT FROM for_job AS compensating
    INTO me FROM saga_steps
    WHERE saga_id = of_saga AND (job_id = for_job OR compensation_job_id = for_job);
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  RETURN jsonb_build_object(
    'saga_id', of_saga, 'step', me.name, 'compensating', me.compensating,
    'results', COALESCE((
      SELECT jsonb_object_agg(st.name, st.result)
      FROM saga_steps st
      WHERE st.saga_id = of_saga
        AND st.status IN ('succeeded', 'compensating', 'compensated', 'compensation_failed')
        AND (st.position < me.position OR (me.compensating AND st.position = me.position))),
      '{}'::jsonb));
END $$;

-- Queues the job of a step (or of its compensation) from the step's template, with its
-- outbox row, and marks the step `running` (or `compensating`).
CREATE FUNCTION conveyor_saga_enqueue(saga uuid, pos integer, compensation boolean)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE t jsonb; tenant uuid; new_id uuid := conveyor_uuid_v7();
BEGIN
  SELECT CASE WHEN compensation THEN st.compensate ELSE st.job END, s.tenant_id
    INTO t, tenant
    FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
    WHERE st.saga_id = saga AND st.position = pos;
  INSERT INTO jobs (id, tenant_id, type, queue, status, priority, payload, max_attempts,
                    timeout_seconds, run_at, callback_url, metadata, saga_id)
  VALUES (new_id, tenant, t->>'type', t->>'queue', 'queued', (t->>'priority')::smallint,
          t->'payload', (t->>'max_attempts')::integer, (t->>'timeout_seconds')::integer, now(),
          t->>'callback_url', COALESCE(t->'metadata', '{}'::jsonb), saga);
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

-- Ends a saga: its final status, its event (when an endpoint of its tenant may want it) and
-- its callback. Most sagas have neither, and building the body is most of the cost.
CREATE FUNCTION conveyor_saga_finish(saga uuid, final text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE s sagas; body jsonb; message uuid;
BEGIN
  UPDATE sagas SET status = final, finished_at = now(), updated_at = now()
    WHERE id = saga RETURNING * INTO s;
  IF EXISTS (SELECT 1 FROM endpoints p WHERE p.tenant_id = s.tenant_id AND p.enabled) THEN
    body := conveyor_saga_json(s);
    PERFORM conveyor_raise_events(ARRAY[s.tenant_id], ARRAY['saga.' || final], ARRAY[body]);
  END IF;
  IF s.callback_url IS NOT NULL THEN
    body := COALESCE(body, conveyor_saga_json(s));
    message := conveyor_uuid_v7();
    INSERT INTO messages (id, tenant_id, event_type, body)
      VALUES (message, s.tenant_id, 'saga.' || final, body::text);
    INSERT INTO deliveries (id, tenant_id, message_id, kind, url)
      VALUES (conveyor_uuid_v7(), s.tenant_id, message, 'callback', s.callback_url);
    PERFORM pg_notify('conveyor_deliveries', '');
  END IF;
END $$;

-- Compensates the nearest succeeded step before `below` that has a compensation; when none
-- is left, the saga is `compensated`. (A succeeded step without one stays `succeeded`: there
-- was nothing to undo.)
CREATE FUNCTION conveyor_saga_compensate_next(saga uuid, below integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE pos integer;
BEGIN
  SELECT position INTO pos FROM saga_steps
    WHERE saga_id = saga AND position < below AND status = 'succeeded' AND compensate IS NOT NULL
    ORDER BY position DESC LIMIT 1;
  IF pos IS NULL THEN
    PERFORM conveyor_saga_finish(saga, 'compensated');
  ELSE
    PERFORM conveyor_saga_enqueue(saga, pos, true);
  END IF;
END $$;

-- Moves the sagas of jobs that just became terminal. A step's job that succeeded starts the
-- next step (or completes the saga); one that died or was cancelled starts compensating.
-- A compensation that succeeded starts the next one down; one that died leaves the saga
-- `failed`, for an operator: later compensations may depend on it, so none runs past it.
-- Each step is matched with its current job, so a job that ends twice (it cannot; but a
-- replayed one could) moves nothing. Returns how many jobs moved a saga.
CREATE FUNCTION conveyor_sagas_advance(ids uuid[]) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE j record; st record; moved integer := 0;
BEGIN
  FOR j IN SELECT id, saga_id, status, result, error FROM jobs
           WHERE id = ANY (ids) AND saga_id IS NOT NULL
             AND status IN ('succeeded', 'dead', 'cancelled')
           ORDER BY saga_id, id
  LOOP
    -- Locks the saga (one writer at a time) and stamps the change.
    UPDATE sagas SET updated_at = now() WHERE id = j.saga_id;
    SELECT position, job_id = j.id AS forward INTO st FROM saga_steps
      WHERE saga_id = j.saga_id
        AND ((job_id = j.id AND status = 'running')
          OR (compensation_job_id = j.id AND status = 'compensating'));
    CONTINUE WHEN NOT FOUND;
    moved := moved + 1;
    IF st.forward AND j.status = 'succeeded' THEN
      UPDATE saga_steps SET status = 'succeeded', result = j.result
        WHERE saga_id = j.saga_id AND position = st.position;
      IF EXISTS (SELECT 1 FROM saga_steps WHERE saga_id = j.saga_id AND position = st.position + 1)
      THEN
        PERFORM conveyor_saga_enqueue(j.saga_id, st.position + 1, false);
      ELSE
        PERFORM conveyor_saga_finish(j.saga_id, 'completed');
      END IF;
    ELSIF st.forward THEN
      UPDATE saga_steps SET status = 'dead', error = COALESCE(j.error, j.status)
        WHERE saga_id = j.saga_id AND position = st.position;
      UPDATE sagas SET status = 'compensating' WHERE id = j.saga_id;
      PERFORM conveyor_saga_compensate_next(j.saga_id, st.position);
    ELSIF j.status = 'succeeded' THEN
      UPDATE saga_steps SET status = 'compensated'
        WHERE saga_id = j.saga_id AND position = st.position;
      PERFORM conveyor_saga_compensate_next(j.saga_id, st.position);
    ELSE
      UPDATE saga_steps SET status = 'compensation_failed', error = COALESCE(j.error, j.status)
        WHERE saga_id = j.saga_id AND position = st.position;
      PERFORM conveyor_saga_finish(j.saga_id, 'failed');
    END IF;
  END LOOP;
  RETURN moved;
END $$;
