-- no-transaction
-- What a lease looks for (see 20261201000009): a tenant's queued remote jobs of a type, most
-- urgent first. Built concurrently, so that upgrading a large jobs table does not block
-- submissions.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_remote_ready
    ON jobs (tenant_id, type, priority DESC, id)
    WHERE status = 'queued' AND remote AND held_at IS NULL;
