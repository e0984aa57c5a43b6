-- no-transaction
-- Queued jobs whose message may have been lost, oldest first, for the scheduler to publish
-- again: only those that have a message. Remote jobs are leased from PostgreSQL and may wait
-- for their workers as long as they like; the sweep must not walk past them each time.
-- Replaces jobs_stale_queued (20261120000002), dropped in the migration after this one.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_stale_local
    ON jobs (enqueued_at) WHERE status = 'queued' AND NOT remote;
