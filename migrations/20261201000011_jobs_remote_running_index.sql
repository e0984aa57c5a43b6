-- no-transaction
-- What a declared type's concurrency limit counts (see 20261201000009): its running jobs.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_remote_running
    ON jobs (tenant_id, type) WHERE status = 'running' AND remote;
