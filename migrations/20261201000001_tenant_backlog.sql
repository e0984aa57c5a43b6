-- no-transaction
-- Queued jobs by tenant and queue: the backlog bound counts one tenant's (an index-only scan
-- of its own entries, not of every tenant's), and queue statistics find the oldest queued job
-- per queue without walking the tenant's finished jobs. Built concurrently: on a large jobs
-- table a plain build would block submissions for as long as it takes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_queued
    ON jobs (tenant_id, queue, enqueued_at) WHERE status = 'queued';
