-- A key's own request rate (per API process), over CONVEYOR_KEY_RATE_LIMIT's default.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0);
