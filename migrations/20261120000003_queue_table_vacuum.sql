-- The outbox is a queue table (every row inserted, then deleted) and jobs are updated several
-- times each: with the default scale factor (20 % of the table) their dead tuples, and the
-- dead entries in the partial indexes the relay and scheduler scan, pile up between vacuums.
-- Vacuum them on a fixed number of dead tuples instead. (The scheduler also vacuums them
-- itself, for databases where autovacuum is off or behind.)
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE job_attempts SET (autovacuum_vacuum_scale_factor = 0.05);
