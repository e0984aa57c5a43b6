-- no-transaction
-- Replaced by jobs_stale_local (20261201000012).
DROP INDEX CONCURRENTLY IF EXISTS jobs_stale_queued;
