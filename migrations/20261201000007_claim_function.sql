-- Claiming jobs, as one function: one round trip that takes the pause locks and then reads
-- the pauses under them.
--
-- A pause must hold every claim that starts after it answered, so claims read the pauses
-- under advisory locks held shared, one per tenant whose jobs they claim (`lock_class`,
-- hashtext of the tenant id) and one for pauses of every tenant (`lock_class`, 0); a pause
-- takes its own exclusively and waits for the claims in flight. Per tenant, so one tenant
-- pausing and resuming in a loop holds up only claims of its own jobs. The locks are taken in
-- one order (by key), so claims and pauses never wait on each other in a cycle.
--
-- In one SQL statement the snapshot is taken before any lock the statement takes, so the
-- locks had to be a statement of their own: four round trips per claim. In a VOLATILE
-- function each statement takes a fresh snapshot, so the locks and the claim are one call.
-- With no pause anywhere, the common case, the claim is the statement it always was.
CREATE FUNCTION conveyor_claim_jobs(ids uuid[], tokens uuid[], worker text, lease_ms bigint,
                                    lock_class integer)
RETURNS SETOF jobs LANGUAGE plpgsql AS $$
DECLARE k integer;
BEGIN
  FOR k IN
    SELECT 0 UNION
    SELECT hashtext(j.tenant_id::text) FROM jobs j WHERE j.id = ANY (ids)
    ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock_shared(lock_class, k);
  END LOOP;
  IF EXISTS (SELECT 1 FROM queue_pauses) THEN
    -- Queued jobs of a paused queue (for their tenant or everyone's) are held, not claimed:
    -- their messages may be dropped, and resuming publishes them again.
    -- The jobs are found by primary key first, with no condition on their status: given
    -- `status = 'queued'`, the planner may scan a partial index of queued jobs instead, and
    -- a queue table's statistics are often stale (measured: a scan of 15,000 queued jobs
    -- per claim, estimated at 14).
    WITH cand AS MATERIALIZED (
      SELECT x.id, x.status, x.held_at, x.queue, x.tenant_id FROM jobs x WHERE x.id = ANY (ids))
    UPDATE jobs j SET held_at = now()
    FROM cand
    WHERE j.id = cand.id AND cand.status = 'queued' AND cand.held_at IS NULL
      AND EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = cand.queue
                    AND (p.tenant_id IS NULL OR p.tenant_id = cand.tenant_id));
  END IF;
  RETURN QUERY
  WITH c AS (SELECT * FROM unnest(ids, tokens) AS c(id, token)),
  claimed AS (
    UPDATE jobs j SET status = 'running', worker_id = worker, lease_token = c.token,
      lease_expires_at = now() + lease_ms * interval '1 millisecond',
      attempts = CASE WHEN j.status = 'queued' THEN j.attempts + 1 ELSE j.attempts END,
      started_at = CASE WHEN j.status = 'queued' THEN now() ELSE j.started_at END
    FROM c WHERE j.id = c.id
      -- The second case makes a retried claim idempotent: its first try committed but the
      -- answer was lost.
      AND ((j.status = 'queued' AND j.held_at IS NULL)
           OR (j.status = 'running' AND j.lease_token = c.token))
    RETURNING j.*),
  a AS (
    INSERT INTO job_attempts (job_id, attempt, outcome, worker)
    SELECT claimed.id, claimed.attempts, 'running', worker FROM claimed
    ON CONFLICT (job_id, attempt) DO NOTHING)
  SELECT * FROM claimed;
END $$;

-- The key of a pause's lock (see `conveyor_claim_jobs`): its tenant's, or 0 for every tenant.
CREATE FUNCTION conveyor_pause_lock_key(tenant uuid) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN tenant IS NULL THEN 0 ELSE hashtext(tenant::text) END
$$;
