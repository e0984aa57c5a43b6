-- no-transaction
-- Held jobs (see 20261201000002), for the resume and the scheduler's sweep to find. Built
-- concurrently, so that upgrading a large jobs table does not block submissions.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_held
    ON jobs (queue, tenant_id) WHERE status = 'queued' AND held_at IS NOT NULL;
