-- Workers in any language: job types a tenant declares, run by the tenant's own processes,
-- which lease jobs over HTTP with the same fencing as in-process workers.

-- A tenant's declared job types. Names are per tenant; a built-in name cannot be declared
-- (the API refuses it).
CREATE TABLE job_types (
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name               text NOT NULL,
    payload_schema     jsonb,
    queue              text,
    max_attempts       integer,
    timeout_seconds    integer,
    concurrency_limit  integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Whether a job runs on its tenant's remote workers: decided when it is stored (its type is
-- one the tenant declared), and kept, so a job never changes hands with its declaration.
-- Remote jobs are leased from here (see `conveyor_lease_jobs`), not consumed from RabbitMQ.
ALTER TABLE jobs ADD COLUMN remote boolean NOT NULL DEFAULT false;

-- Their indexes are built concurrently, in the migrations after this one.

-- Remote workers seen: each lease notes its worker.
CREATE TABLE remote_workers (
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          text NOT NULL,
    types         text[] NOT NULL,
    queues        text[],
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Leases up to `max` of a tenant's queued remote jobs of `types` (in `queues`, when given) to
-- `worker`, through the claim every worker uses (`conveyor_claim_jobs`: same fence, same
-- pauses, same attempt rows). `SKIP LOCKED`: two API processes serving waiting workers never
-- pick the same job. A type's `concurrency_limit` counts its running jobs under a lock of the
-- (tenant, type), taken in name order so that leases never wait on each other in a cycle.
-- The types are visited in random order, so one type's backlog does not starve the others.
CREATE FUNCTION conveyor_lease_jobs(tenant uuid, types text[], queues text[], max integer,
                                    worker text, lease_ms bigint, pause_lock_class integer,
                                    limit_lock_class integer)
RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE
  t text; lim integer; room integer;
  picked uuid[] := '{}';
BEGIN
  FOR t IN
    SELECT name FROM job_types
    WHERE tenant_id = tenant AND name = ANY (types) AND concurrency_limit IS NOT NULL
    ORDER BY name
  LOOP
    PERFORM pg_advisory_xact_lock(limit_lock_class, hashtext(tenant::text || '/' || t));
  END LOOP;
  FOR t, lim IN
    SELECT u.name, jt.concurrency_limit
    FROM (SELECT DISTINCT unnest(types) AS name) u
    LEFT JOIN job_types jt ON jt.tenant_id = tenant AND jt.name = u.name
    ORDER BY random()
  LOOP
    room := max - cardinality(picked);
    EXIT WHEN room <= 0;
    IF lim IS NOT NULL THEN
      room := LEAST(room, lim - (SELECT count(*) FROM jobs r
                                 WHERE r.tenant_id = tenant AND r.type = t
                                   AND r.status = 'running' AND r.remote));
    END IF;
    CONTINUE WHEN room <= 0;
    picked := picked || ARRAY(
      SELECT j.id FROM jobs j
      WHERE j.tenant_id = tenant AND j.type = t AND j.status = 'queued' AND j.remote
        AND j.held_at IS NULL AND (queues IS NULL OR j.queue = ANY (queues))
      ORDER BY j.priority DESC, j.id
      LIMIT room FOR UPDATE SKIP LOCKED);
  END LOOP;
  INSERT INTO remote_workers (tenant_id, name, types, queues) VALUES (tenant, worker, types, queues)
    ON CONFLICT (tenant_id, name) DO UPDATE
      SET types = EXCLUDED.types, queues = EXCLUDED.queues, last_seen_at = now();
  IF cardinality(picked) = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT * FROM conveyor_claim_jobs(
    picked, ARRAY(SELECT gen_random_uuid() FROM unnest(picked)), worker, lease_ms,
    pause_lock_class);
END $$;

-- As before (20261122000008), with a step of a declared type run remotely.
CREATE OR REPLACE FUNCTION conveyor_saga_enqueue(saga uuid, pos integer, compensation boolean)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE t jsonb; tenant uuid; trace text; new_id uuid := conveyor_uuid_v7();
BEGIN
  SELECT CASE WHEN compensation THEN st.compensate ELSE st.job END, s.tenant_id, s.traceparent
    INTO t, tenant, trace
    FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
    WHERE st.saga_id = saga AND st.position = pos;
  INSERT INTO jobs (id, tenant_id, type, queue, status, priority, payload, max_attempts,
                    timeout_seconds, run_at, callback_url, metadata, saga_id, traceparent, remote)
  VALUES (new_id, tenant, t->>'type', t->>'queue', 'queued', (t->>'priority')::smallint,
          t->'payload', (t->>'max_attempts')::integer, (t->>'timeout_seconds')::integer, now(),
          t->>'callback_url', COALESCE(t->'metadata', '{}'::jsonb), saga, trace,
          EXISTS (SELECT 1 FROM job_types jt WHERE jt.tenant_id = tenant AND jt.name = t->>'type'));
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
