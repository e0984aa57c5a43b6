-- When a job last became `queued`. A job queued for long may have lost its message (a purged
-- queue, a broker policy, a lost node); the scheduler publishes such jobs again. Duplicate
-- messages are harmless: a claim takes a job once.
ALTER TABLE jobs ADD COLUMN enqueued_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX jobs_stale_queued ON jobs (enqueued_at) WHERE status = 'queued';
