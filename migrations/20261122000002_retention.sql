-- Retention: finished rows older than CONVEYOR_RETENTION are purged in bounded batches, each
-- walking one of these indexes from its oldest end. `finished_at` is set exactly when a row
-- becomes terminal (and cleared when it runs again), so the partial indexes hold only
-- finished rows, and unfinished ones are never looked at.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX sagas_finished ON sagas (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX schedule_fires_time ON schedule_fires (fire_time);
